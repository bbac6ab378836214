"""Per-QP gain of the denoiser's sampled output over D(ŷ) in a `gvc-train diffusion
--sampled-perceptual` log: for the first and the last K log lines (10 steps each), the mean
LPIPS and PSNR of the sampled output and of D(ŷ) on the training crops, and the change.
Each log line already averages its 10 steps; lines are weighted equally.
Usage: sampled_gain.py <log> [K = 10]"""
import re
import sys

PATTERN = re.compile(r"qp(\d) sampled: lpips ([\d.]+) \(D\(ŷ\) ([\d.]+)\) psnr ([\d.]+) \(([\d.]+)\)")

path = sys.argv[1]
k = int(sys.argv[2]) if len(sys.argv) > 2 else 10
lines = [line for line in open(path, encoding="utf-8") if line.startswith("[diffusion] step")]
if not lines:
    sys.exit(f"{path}: no '[diffusion] step' lines")


def step_of(line):
    return int(re.match(r"\[diffusion\] step (\d+)", line).group(1))


for name, window in [("first", lines[:k]), ("last", lines[-k:])]:
    print(f"{name} {len(window)} log lines (at steps {step_of(window[0])}–{step_of(window[-1])}):")
    per_qp = {}
    for line in window:
        for qp, *values in PATTERN.findall(line):
            per_qp.setdefault(int(qp), []).append([float(v) for v in values])
    for qp, rows in sorted(per_qp.items()):
        lpips, lpips_y, psnr, psnr_y = (sum(col) / len(rows) for col in zip(*rows))
        print(
            f"  qp {qp}: LPIPS {lpips:.4f} vs D(ŷ) {lpips_y:.4f} ({100 * (lpips / lpips_y - 1):+.1f} %), "
            f"PSNR {psnr - psnr_y:+.2f} dB ({len(rows)} lines)"
        )
