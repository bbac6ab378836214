"""Rate–metric plots (PNG) of a gvc-eval run: one figure per clip, one panel per metric,
every codec as a line over its rate points. Usage: plot_results.py <eval output folder>."""
import csv
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

METRICS = [("psnr_rgb", "PSNR (dB) ↑"), ("ms_ssim", "MS-SSIM ↑"), ("lpips_alex", "LPIPS ↓"),
           ("dists", "DISTS ↓"), ("fvd", "FVD ↓"), ("tlp", "tLP ↓")]

out = Path(sys.argv[1])
rows = list(csv.DictReader(open(out / "results.csv")))
by_clip = defaultdict(lambda: defaultdict(list))
for r in rows:
    by_clip[r["clip"]][r["codec"]].append(r)
(out / "plots").mkdir(exist_ok=True)
for clip, codecs in by_clip.items():
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5))
    for ax, (key, label) in zip(axes.flat, METRICS):
        for codec, rs in codecs.items():
            pts = sorted((float(r["bpp"]), float(r[key])) for r in rs if r[key] != "")
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=codec)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes.flat[0].legend()
    fig.suptitle(clip)
    fig.tight_layout()
    path = out / "plots" / f"{Path(clip).stem}.png"
    fig.savefig(path, dpi=90)
    print(f"[plot] {path}", file=sys.stderr)
