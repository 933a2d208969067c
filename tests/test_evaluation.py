"""evaluate(): bicubic against the published tables, the nn.Module path, gray images, folders."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from binsr.data import imresize, read_image, write_image
from binsr.errors import BinsrError, UsageError
from binsr.evaluation import evaluate, upscale_image
from binsr.metrics import psnr_y, to_uint8

# Bicubic, published (SCALES paper Table III and the usual SR tables): PSNR dB / SSIM
SET5 = {2: (33.66, 0.9299), 3: (30.39, 0.8682), 4: (28.42, 0.8104)}


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_set5_matches_published(data_root, scale):
    r = evaluate("bicubic", "Set5", scale, data_root=data_root)
    psnr, ssim = SET5[scale]
    assert r["n_images"] == 5 and r["dataset"] == "Set5" and r["scale"] == scale and r["model"] == "bicubic"
    assert abs(r["psnr"] - psnr) < 0.03 and abs(r["ssim"] - ssim) < 0.002, r


def test_bicubic_set14_x4_with_its_gray_image(data_root):
    r = evaluate("bicubic", "Set14", 4, data_root=data_root, per_image=True)
    assert r["n_images"] == 14 and len(r["per_image"]) == 14
    assert abs(r["psnr"] - 26.00) < 0.03 and abs(r["ssim"] - 0.7027) < 0.002, r
    # img_003 is mode L: compared on gray values, not on the Y of R = G = B (which is 16 + 219/255 v
    # and would read 20 log10(255/219) = 1.32 dB higher)
    gray = next(p for p in r["per_image"] if p["name"] == "img_003_SRF_4_HR")
    hr = read_image(data_root / "benchmark/Set14/image_SRF_4/img_003_SRF_4_HR.png")
    assert hr.ndim == 2
    sr = imresize(imresize(hr, 1 / 4), 4)
    rgb = psnr_y(np.dstack([sr] * 3), np.dstack([hr] * 3), 4)
    assert gray["psnr"] == pytest.approx(rgb - 20 * math.log10(255 / 219), abs=1e-9)


def test_shipped_lr_is_close_to_published(data_root):
    r = evaluate("bicubic", "Set5", 4, lr_source="shipped", data_root=data_root)
    assert r["lr_source"] == "shipped" and abs(r["psnr"] - 28.42) < 0.03


class Bicubic(nn.Module):
    """A 'model' that is MATLAB bicubic in float; records what it was called with."""

    def __init__(self, scale):
        super().__init__()
        self.scale, self.calls = scale, []
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        self.calls.append((tuple(x.shape), torch.is_grad_enabled(), self.training, bool((x[:, 0] == x[:, 1]).all())))
        return imresize(x, self.scale) + self.dummy


def test_module_path_matches_bicubic_and_restores_training_mode(data_root):
    model = Bicubic(4).train()
    r = evaluate(model, "Set5", 4, data_root=data_root)
    assert model.training  # restored
    assert r["model"] == "Bicubic" and len(model.calls) == 5
    assert all(shape[:2] == (1, 3) and not grad and not training for shape, grad, training, _ in model.calls)
    # float32 with one final rounding vs uint8 per-pass rounding: tiny differences only
    assert abs(r["psnr"] - evaluate("bicubic", "Set5", 4, data_root=data_root)["psnr"]) < 0.02


def test_gray_images_with_a_module_and_folder_datasets(tmp_path):
    rng = np.random.default_rng(0)
    hr = imresize(rng.integers(0, 256, (12, 10), dtype=np.uint8), 4)  # smooth gray 48x40
    write_image(tmp_path / "hr" / "g.png", hr)
    model = Bicubic(2)
    r = evaluate(model, tmp_path / "hr", 2, per_image=True)
    assert model.calls[0][0] == (1, 3, 24, 20) and model.calls[0][3]  # fed as R = G = B
    ref = evaluate("bicubic", str(tmp_path / "hr"), 2)  # a string with '/' is a folder
    assert r["n_images"] == ref["n_images"] == 1 and r["dataset"] == "hr"
    assert abs(r["psnr"] - ref["psnr"]) < 0.05 and 20 < ref["psnr"] < 60


def test_wrong_output_size_and_bad_names(tmp_path, data_root):
    write_image(tmp_path / "hr" / "a.png", np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(BinsrError, match="x4"):
        evaluate(Bicubic(2), tmp_path / "hr", 4)
    with pytest.raises(UsageError, match="unknown model"):
        evaluate("lanczos", tmp_path / "hr", 4)
    with pytest.raises(UsageError, match="Set5"):
        evaluate("bicubic", "Set55", 4, data_root=data_root)


def test_an_image_with_nothing_left_after_the_border_crop_is_an_error(tmp_path):
    """An 8x8 HR at x4 keeps no pixel once 4 are cropped from each border: its PSNR was a NaN mean."""
    write_image(tmp_path / "hr" / "a.png", np.full((8, 9, 3), 128, np.uint8))
    with pytest.raises(BinsrError, match="hr image a is 8x8 .* nothing is left once 4 border pixels are cropped"):
        evaluate("bicubic", tmp_path / "hr", 4)


def test_self_ensemble_averages_the_eight_turned_back_outputs_before_rounding(tmp_path):
    """EDSR's "+": each LR image flipped and turned 8 ways, the module's float outputs turned back
    and averaged, then rounded once; gray images too; bicubic has no self-ensemble."""
    rng = np.random.default_rng(3)
    write_image(tmp_path / "hr" / "c.png", imresize(rng.integers(0, 256, (9, 7, 3), dtype=np.uint8), 4))
    write_image(tmp_path / "hr" / "g.png", imresize(rng.integers(0, 256, (8, 11), dtype=np.uint8), 4))

    class Skewed(Bicubic):  # bicubic times a ramp over the output rows: not flip-equivariant
        def forward(self, x):
            out = super().forward(x)
            return out * torch.linspace(0.8, 1.0, out.shape[2])[:, None]

    model = Skewed(2)
    r = evaluate(model, tmp_path / "hr", 2, per_image=True, self_ensemble=True)
    assert r["self_ensemble"] is True and r["n_images"] == 2 and len(model.calls) == 16
    assert sorted(c[0] for c in model.calls[:8]) == sorted([(1, 3, 18, 14)] * 4 + [(1, 3, 14, 18)] * 4)
    plain = evaluate(model, tmp_path / "hr", 2, per_image=True)
    assert "self_ensemble" not in plain
    for image in ("c", "g"):
        lr = imresize(read_image(tmp_path / "hr" / f"{image}.png"), 1 / 2)
        outs = []
        for k in range(4):
            for flip in (False, True):
                t = np.rot90(lr, k)
                t = np.ascontiguousarray(t[:, ::-1] if flip else t)
                x = torch.from_numpy(t).float().div(255)
                x = x.expand(3, *t.shape) if t.ndim == 2 else x.permute(2, 0, 1)
                with torch.no_grad():
                    y = model(x[None])
                y = (y.mean(dim=1) if t.ndim == 2 else y[0].permute(1, 2, 0)).double().squeeze(0).numpy()
                outs.append(np.rot90(y[:, ::-1] if flip else y, -k))
        want = to_uint8(np.mean(outs, axis=0))
        assert np.array_equal(upscale_image(model, lr, 2, self_ensemble=True), want), image
        assert not np.array_equal(upscale_image(model, lr, 2), want)
    with pytest.raises(UsageError, match="self-ensemble"):
        evaluate("bicubic", tmp_path / "hr", 2, self_ensemble=True)
