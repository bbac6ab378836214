"""Converts the third-party weights fetched by fetch_assets.sh into safetensors.

Names mirror the reference PyTorch modules (BasicVSR's SpyNet, torchvision's AlexNet/VGG16
`features.N`, LPIPS's `linN.model.1`), kernels in OIHW. The Rust side loads only these files.
"""
import pickle
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file


def hwio_to_oihw(k):
    return torch.from_numpy(np.ascontiguousarray(np.transpose(np.asarray(k, dtype=np.float32), (3, 2, 0, 1))))


def convert_spynet(src, dst):
    sd = torch.load(src / "BasicVSR_Vimeo90K_BIx4.pth", map_location="cpu", weights_only=False)["params"]
    out = {k[len("spynet."):]: v.float().contiguous() for k, v in sd.items() if k.startswith("spynet.")}
    assert len(out) == 62, len(out)
    save_file(out, str(dst / "spynet.safetensors"))


# Conv layers' positions in torchvision's `features` Sequential.
TORCHVISION_INDEX = {
    "alexnet": [0, 3, 6, 8, 10],
    "vgg16": [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28],
}


def convert_lpips(src, dst, net):
    ck = pickle.load(open(src / f"{net}.ckpt", "rb"))
    trunk = ck["AlexNet_0" if net == "alexnet" else "VGG16_0"]
    out = {}
    for i, idx in enumerate(TORCHVISION_INDEX[net]):
        conv = trunk[f"Conv_{i}"]
        out[f"features.{idx}.weight"] = hwio_to_oihw(conv["kernel"])
        out[f"features.{idx}.bias"] = torch.from_numpy(np.asarray(conv["bias"], dtype=np.float32))
    for i in range(5):
        out[f"lin{i}.model.1.weight"] = hwio_to_oihw(ck[f"NetLinLayer_{i}"]["Conv_0"]["kernel"])
    save_file(out, str(dst / f"lpips_{net}.safetensors"))


def convert_dists(src, dst):
    d = torch.load(src / "weights.pt", map_location="cpu", weights_only=False)
    save_file({k: d[k].float().contiguous() for k in ("alpha", "beta")}, str(dst / "dists.safetensors"))


def convert_i3d(src, dst):
    ck = pickle.load(open(src / "i3d-kinetics-400.ckpt", "rb"))
    out = {}

    def walk(o, prefix):
        if isinstance(o, dict):
            for k, v in o.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        else:
            a = np.asarray(o, dtype=np.float32)
            # Batch-norm statistics are stored as (1,1,1,1,C).
            if a.ndim == 5 and a.shape[:4] == (1, 1, 1, 1):
                a = a.reshape(-1)
            out[prefix] = torch.from_numpy(np.ascontiguousarray(a))

    walk(ck, "")
    save_file(out, str(dst / "i3d_kinetics400.safetensors"))


def main():
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    dst.mkdir(parents=True, exist_ok=True)
    convert_spynet(src, dst)
    convert_lpips(src, dst, "alexnet")
    convert_lpips(src, dst, "vgg16")
    convert_dists(src, dst)
    convert_i3d(src, dst)
    for f in sorted(dst.glob("*.safetensors")):
        print(f"[assets] {f.name}: {f.stat().st_size / 1e6:.1f} MB", file=sys.stderr)


if __name__ == "__main__":
    main()
