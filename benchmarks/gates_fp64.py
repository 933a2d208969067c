"""Would SCALES' gates in float64, rounded once to float32, make two implementations agree bit for
bit? Two sum orders of the same float64 gate maths: torch's conv2d / mean as they are, and with the
channels permuted and the rows flipped. The rest of the network is binsr's float32 forward.

    taskset -c 0 .venv/bin/python benchmarks/gates_fp64.py WEIGHTS.safetensors [DATA_ROOT]

Issue 23 (docs/CONVENTIONS.md, "Packed engine vs PyTorch"): with float32 gates the engine and
PyTorch agreed on 92-99% of Set5's uint8 values; this was the evidence for the fix that
binsr.nn.exact now makes (the script swaps the gates' forward for its own, in either dtype).
"""

import glob
import sys

import numpy as np
import torch
import torch.nn.functional as F

from binsr.data import read_image
from binsr.data.paths import data_root
from binsr.models import build_from_file
from binsr.nn import attention

#: the gates' arithmetic type and whether to sum in the second order (permuted channels, flipped rows)
MODE = {"dtype": torch.float64, "reorder": False}


def spatial_gate(self: attention.SpatialGate, x: torch.Tensor) -> torch.Tensor:
    w, b, xd = self.conv.weight.to(MODE["dtype"]), self.conv.bias.to(MODE["dtype"]), x.to(MODE["dtype"])
    if MODE["reorder"]:
        idx = torch.randperm(x.shape[1], generator=torch.Generator().manual_seed(1))
        xd, w = xd[:, idx], w[:, idx]
    return torch.sigmoid(F.conv2d(xd, w, b, self.conv.stride, self.conv.padding, self.conv.dilation)).float()


def channel_gate(self: attention.ChannelGate, x: torch.Tensor) -> torch.Tensor:
    xd = x.to(MODE["dtype"])
    pooled = (xd.flip(2) if MODE["reorder"] else xd).mean(dim=(2, 3)).unsqueeze(1)
    gate = F.conv1d(pooled, self.conv.weight.to(MODE["dtype"]), padding=self.conv.padding)
    return torch.sigmoid(gate).float().transpose(1, 2).unsqueeze(-1)


def _uint8(v: np.ndarray) -> np.ndarray:
    return np.clip(np.round(v * 255), 0, 255)


def main() -> None:
    attention.SpatialGate.forward = spatial_gate
    attention.ChannelGate.forward = channel_gate
    model = build_from_file(sys.argv[1]).eval()
    root = data_root(sys.argv[2] if len(sys.argv) > 2 else None)
    for f in sorted(glob.glob(str(root / "benchmark" / "Set5" / "image_SRF_4" / "*_LR.png"))):
        x = torch.from_numpy((read_image(f).astype(np.float32) / 255).transpose(2, 0, 1)[None].copy())
        for dtype in (torch.float32, torch.float64):  # float32: the control, where the order shows
            MODE["dtype"] = dtype
            with torch.no_grad():
                MODE["reorder"] = False
                a = model(x).numpy()
                MODE["reorder"] = True
                b = model(x).numpy()
            d = np.abs(_uint8(a) - _uint8(b))
            print(f"{f.split('/')[-1][:7]} {str(dtype)[6:]} gates, two orders: {100 * (d == 0).mean():.4f}% equal, "
                  f"max {d.max():.0f}, bit-identical floats {np.array_equal(a, b)}")


if __name__ == "__main__":
    main()
