"""MATLAB imresize: hand-computed values, uint8 semantics, NumPy/torch agreement, gradients."""

import numpy as np
import pytest
import torch

from binsr.data import imresize, modcrop, read_image

# 1-D results worked out from MATLAB's formulas (a = -0.5 cubic, mirrored borders).
# x1/2 of the ramp [0, 1, 2, 3]: output pixel 1 sits at u = 1.5; with the kernel widened to 8
# px the taps at distances .5, 1.5, 2.5, 3.5 weigh 0.5 * cubic(d/2) = .43359375, .11328125,
# -.03515625, -.01171875; indices -2..5 mirror to 3 2 1 1 2 3 4 4.
_W = [-0.01171875, -0.03515625, 0.11328125, 0.43359375, 0.43359375, 0.11328125, -0.03515625, -0.01171875]
_DOWN = sum(w * v for w, v in zip(_W, [2, 1, 0, 0, 1, 2, 3, 3]))  # = 0.4609375
# x2 of [p, q]: output pixels at u = .75, 1.25, 1.75, 2.25 with cubic(.25) = .8671875,
# cubic(.75) = .2265625, cubic(1.25) = -.0703125, cubic(1.75) = -.0234375 -> for [0, 1]:
_UP = [-0.0234375 - 0.0703125, 0.2265625 - 0.0234375, 0.8671875 - 0.0703125, 1 + 0.0703125 + 0.0234375]


def test_ramp_downscale_by_2_matches_hand_computation():
    ramp = (4 * np.arange(4)[:, None] + np.arange(4)[None, :]).astype(np.float64)  # f = 4r + c
    g = np.array([_DOWN, 3 - _DOWN])  # by symmetry the second pixel is 3 - first
    assert _DOWN == pytest.approx(0.4609375)
    np.testing.assert_allclose(imresize(ramp, 0.5), 4 * g[:, None] + g[None, :], atol=1e-12)


def test_upscale_by_2_matches_hand_computation():
    img = np.array([[0.0, 16.0], [32.0, 48.0]])  # f = 32r + 16c
    up = np.array(_UP)
    np.testing.assert_allclose(_UP, [-0.09375, 0.203125, 0.796875, 1.09375])
    np.testing.assert_allclose(imresize(img, 2), 32 * up[:, None] + 16 * up[None, :], atol=1e-12)


def test_uint8_rounds_and_saturates():
    out = imresize(np.array([[0, 255]], np.uint8), 2)
    assert out.dtype == np.uint8 and out.shape == (2, 4)
    # 255 * [-.09375, .203125, .796875, 1.09375] = [-23.9, 51.8, 203.2, 278.9]
    np.testing.assert_array_equal(out, [[0, 52, 203, 255]] * 2)


def test_uint8_is_rounded_after_each_pass_in_matlab_order():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)

    def pass_(x, shape):
        return np.floor(np.clip(imresize(x.astype(np.float64), output_shape=shape), 0, 255) + 0.5)

    # rows have the smaller scale (1/2 < 2): MATLAB resizes them first
    rows_first = pass_(pass_(img, (4, 8)), (4, 16))
    cols_first = pass_(pass_(img, (8, 16)), (4, 16))
    out = imresize(img, output_shape=(4, 16))
    np.testing.assert_array_equal(out, rows_first)
    assert (out != cols_first).any()
    once = np.floor(np.clip(imresize(img.astype(np.float64), output_shape=(4, 16)), 0, 255) + 0.5)
    assert (out != once).any()  # rounding between the passes is visible


def test_shapes_types_and_constant_images():
    assert imresize(np.zeros((10, 7), np.float32), 0.35).shape == (4, 3)  # ceil(3.5), ceil(2.45)
    assert imresize(np.zeros((10, 7), np.float32), 0.35).dtype == np.float32
    assert imresize(np.zeros((9, 6, 3), np.uint8), 1 / 3).shape == (3, 2, 3)
    const = np.full((11, 13, 3), 0.3)
    for scale in (1 / 4, 1 / 3, 0.7, 1.5, 3):
        np.testing.assert_allclose(imresize(const, scale), 0.3, atol=1e-12)
    with pytest.raises(ValueError):
        imresize(const, 2, output_shape=(3, 3))
    with pytest.raises(TypeError):
        imresize(np.zeros((4, 4), np.int32), 2)


@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 1 / 4, 0.75, 1.5, 2, 3])
def test_numpy_and_torch_agree(scale):
    rng = np.random.default_rng(1)
    img = rng.random((2, 13, 17, 3))
    ref = np.stack([imresize(im, scale) for im in img])
    out = imresize(torch.from_numpy(img).permute(0, 3, 1, 2), scale).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(out, ref, atol=1e-12)
    out32 = imresize(torch.from_numpy(img).float().permute(0, 3, 1, 2), scale)
    assert out32.dtype == torch.float32 and out32.shape[-2:] == ref.shape[1:3]


def test_torch_gradient_flows():
    x = torch.rand(1, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    with torch.inference_mode():  # caches the matrices first; they must still work with autograd
        imresize(x.detach(), 0.5), imresize(x.detach(), 3)
    assert torch.autograd.gradcheck(lambda t: imresize(t, 0.5), (x,))
    assert torch.autograd.gradcheck(lambda t: imresize(t, output_shape=(9, 4)), (x,))
    imresize(x, 3).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_modcrop():
    img = np.arange(7 * 10 * 3).reshape(7, 10, 3)
    np.testing.assert_array_equal(modcrop(img, 3), img[:6, :9])
    assert modcrop(img[..., 0], 2).shape == (6, 10)


def test_close_to_shipped_lr_images(data_root):
    """The shipped LR files are close to MATLAB imresize; ours agrees on ~98.5% of values."""
    for name, scale in [("Set5", 2), ("Set5", 3), ("Set5", 4), ("Set14", 4)]:
        equal, mad = [], []
        for hr_path in sorted((data_root / "benchmark" / name / f"image_SRF_{scale}").glob("*_HR.png")):
            hr, lr = read_image(hr_path), read_image(str(hr_path).replace("_HR", "_LR"))
            diff = np.abs(imresize(hr, 1 / scale).astype(int) - lr)
            equal.append((diff == 0).mean())
            mad.append(diff.mean())
        assert len(equal) >= 5
        assert np.mean(equal) >= 0.97 and np.mean(mad) < 0.05, (name, scale, np.mean(equal), np.mean(mad))
