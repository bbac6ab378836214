"""Times the convolutions of the codec's decoding path as `PortableConv` runs them (f64 on
integers, whole and in bands of output rows under 8 MiB of unfolded input) against libtorch's
float convolution, at the layer shapes of a 640x480 frame (latent grid 80x60, code grid
40x30). Run with the project venv's python (the same libtorch as the plugin):
    .venv/bin/python scripts/portable_conv_timing.py
Prints milliseconds per call, median of 5 repeats of 10 calls, 2 threads."""
import statistics
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(2)
BAND_BYTES = 8 << 20  # as in src/model/layers.rs


def ms(f):
    f()
    runs = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(10):
            f()
        runs.append((time.perf_counter() - t) / 10 * 1e3)
    return statistics.median(runs)


def banded(x, w, stride):
    cin, k = w.shape[1], w.shape[2]
    xp = F.pad(x, (k // 2,) * 4)
    out_h = (xp.shape[2] - k) // stride + 1
    out_w = (xp.shape[3] - k) // stride + 1
    rows = max(1, min(out_h, BAND_BYTES // (cin * k * k * out_w * 8)))
    bands = []
    for r0 in range(0, out_h, rows):
        r1 = min(out_h, r0 + rows)
        bands.append(F.conv2d(xp[:, :, r0 * stride:(r1 - 1) * stride + k], w, stride=stride))
    return torch.cat(bands, 2)


# (name, cin, cout, height, width, stride) of gvc-small's decoding path at 640x480
layers = [
    ("contextual dec_fuse", 144, 96, 60, 80, 1),
    ("contextual dec_res", 96, 96, 60, 80, 1),
    ("contextual dec_up", 96, 384, 30, 40, 1),
    ("temporal_prior 0", 240, 128, 30, 40, 1),
    ("temporal_prior 1", 128, 128, 30, 40, 1),
    ("ctx0", 48, 48, 60, 80, 1),
    ("ctx1_down", 48, 48, 60, 80, 2),
]
print("layer | f32 conv | f64 whole | f64 banded (ms per call)")
for name, cin, cout, h, w, s in layers:
    x = torch.randn(1, cin, h, w)
    wt = torch.randn(cout, cin, 3, 3)
    xi, wi = (x * 2**20).round().double(), (wt * 2**12).round().double()
    whole = F.conv2d(xi, wi, stride=s, padding=1)
    assert torch.equal(banded(xi, wi, s), whole)
    t32 = ms(lambda: F.conv2d(x, wt, stride=s, padding=1))
    t64 = ms(lambda: F.conv2d(xi, wi, stride=s, padding=1))
    tb = ms(lambda: banded(xi, wi, s))
    print(f"{name} {cin}->{cout} {w}x{h}/{s} | {t32:.2f} | {t64:.2f} | {tb:.2f}")
