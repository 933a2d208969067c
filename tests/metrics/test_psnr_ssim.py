"""The SR protocol: Y conversion, rounding, border crop, PSNR by hand, SSIM against scikit-image."""

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from binsr.data import imresize, read_image
from binsr.metrics import crop_border, psnr_y, ssim_y, to_uint8, to_y_channel

RNG = np.random.default_rng(0)


def test_y_channel_matches_matlab_rgb2ycbcr():
    px = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]]], np.uint8)
    y = to_y_channel(px)[0]
    expected = [16, 235, 16 + 65.481, 16 + 128.553, 16 + 24.966, 16 + (65.481 * 10 + 128.553 * 20 + 24.966 * 30) / 255]
    np.testing.assert_allclose(y, expected, atol=1e-12)
    gray = RNG.integers(0, 256, (4, 5), dtype=np.uint8)
    np.testing.assert_array_equal(to_y_channel(gray), gray.astype(np.float64))  # gray is its own Y
    with pytest.raises(TypeError):
        to_y_channel(gray.astype(np.float64))


def test_to_uint8_rounds_half_away_and_saturates():
    vals = np.array([-0.1, 0.5 / 255, 1.49 / 255, 1.5 / 255, 254.5 / 255, 1.2])
    np.testing.assert_array_equal(to_uint8(vals), [0, 1, 1, 2, 255, 255])
    t = torch.tensor(vals).reshape(1, 1, 2, 3)
    out = to_uint8(t)
    assert out.shape == (2, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out.ravel(), [0, 1, 1, 2, 255, 255])
    rgb = torch.rand(3, 4, 5)
    np.testing.assert_array_equal(to_uint8(rgb), to_uint8(rgb.permute(1, 2, 0).numpy().astype(np.float64)))


def test_psnr_by_hand_gray_with_border():
    hr = np.full((10, 10), 100, np.uint8)
    sr = hr.copy()
    sr[0, :] = 250  # inside the 2-px border: ignored
    sr[4, 5], sr[6, 3] = 110, 97  # 2 of the 6x6 = 36 inner pixels differ, by 10 and 3
    mse = (10**2 + 3**2) / 36
    assert psnr_y(sr, hr, 2) == pytest.approx(10 * math.log10(255**2 / mse), abs=1e-12)
    assert psnr_y(hr, hr, 2) == math.inf


def test_psnr_by_hand_rgb():
    hr = RNG.integers(0, 256, (12, 9, 3), dtype=np.uint8)
    sr = np.clip(hr.astype(int) + RNG.integers(-9, 10, hr.shape), 0, 255).astype(np.uint8)

    def y(img):
        img = img[3:-3, 3:-3].astype(np.float64)
        return 16 + (65.481 * img[..., 0] + 128.553 * img[..., 1] + 24.966 * img[..., 2]) / 255

    mse = np.mean((y(sr) - y(hr)) ** 2)
    assert psnr_y(sr, hr, 3) == pytest.approx(10 * math.log10(255**2 / mse), abs=1e-10)
    # a float SR in [0, 1] is rounded to uint8 first
    assert psnr_y((sr.astype(np.float64) + 0.49) / 255, hr, 3) == pytest.approx(psnr_y(sr, hr, 3), abs=1e-12)
    assert psnr_y(torch.from_numpy(sr).permute(2, 0, 1) / 255.0, hr, 3) == pytest.approx(psnr_y(sr, hr, 3), abs=1e-12)


def test_shape_mismatch_and_crop():
    img = np.zeros((10, 12, 3), np.uint8)
    assert crop_border(img, 3).shape == (4, 6, 3)
    assert crop_border(img, 0) is img
    with pytest.raises(ValueError):
        psnr_y(img, img[:8], 2)


def _skimage_ssim(sr, hr, border):
    y1 = to_y_channel(crop_border(sr, border))
    y2 = to_y_channel(crop_border(hr, border))
    # truncate=3.5 with sigma 1.5 gives the 11x11 window; skimage averages over the image minus
    # a 5-px margin, i.e. exactly the 'valid' region of the 11x11 filter.
    return structural_similarity(
        y1, y2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255, truncate=3.5
    )


def test_ssim_matches_skimage_on_synthetic_images():
    base = imresize(RNG.integers(0, 256, (12, 10, 3), dtype=np.uint8), 4)  # smooth structure
    noisy = np.clip(base.astype(int) + RNG.integers(-20, 21, base.shape), 0, 255).astype(np.uint8)
    assert ssim_y(noisy, base, 4) == pytest.approx(_skimage_ssim(noisy, base, 4), abs=1e-4)
    gray_sr, gray_hr = noisy[..., 1], base[..., 1]
    assert ssim_y(gray_sr, gray_hr, 2) == pytest.approx(_skimage_ssim(gray_sr, gray_hr, 2), abs=1e-4)
    assert ssim_y(base, base, 4) == pytest.approx(1.0, abs=1e-12)
    assert ssim_y(noisy, base, 4) == pytest.approx(ssim_y(base, noisy, 4), abs=1e-12)


def test_ssim_matches_skimage_on_a_benchmark_image(data_root):
    hr = read_image(data_root / "benchmark/Set5/image_SRF_4/img_002_SRF_4_HR.png")
    sr = imresize(imresize(hr, 1 / 4), 4)
    assert ssim_y(sr, hr, 4) == pytest.approx(_skimage_ssim(sr, hr, 4), abs=1e-4)
