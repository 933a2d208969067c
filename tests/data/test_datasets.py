"""Benchmark sets, HR folders and the training patch dataset."""

import numpy as np
import pytest
import torch

from binsr.data import BenchmarkSet, ImageFolder, TrainPatches, imresize, read_image, write_image
from binsr.errors import BinsrError, UsageError

RNG = np.random.default_rng(0)


def test_benchmark_set_matlab_and_shipped_lr(data_root):
    matlab = BenchmarkSet("Set5", 3, root=data_root)
    shipped = BenchmarkSet("set5", 3, root=data_root, lr_source="shipped")  # names are case-insensitive
    assert len(matlab) == len(shipped) == 5 and matlab.name == "Set5"
    pair, ship = matlab[0], shipped[0]
    assert pair.name == "img_001_SRF_3_HR"
    assert pair.hr.shape[0] % 3 == 0 and pair.lr.shape == (pair.hr.shape[0] // 3, pair.hr.shape[1] // 3, 3)
    np.testing.assert_array_equal(pair.lr, imresize(pair.hr, 1 / 3))
    hr_path = data_root / "benchmark/Set5/image_SRF_3/img_001_SRF_3_HR.png"
    np.testing.assert_array_equal(ship.lr, read_image(str(hr_path).replace("_HR", "_LR")))
    np.testing.assert_array_equal(ship.hr, pair.hr)


def test_benchmark_set_errors(data_root):
    with pytest.raises(UsageError, match="Set5"):  # lists what exists
        BenchmarkSet("Set6", 2, root=data_root)
    with pytest.raises(UsageError, match="x8"):
        BenchmarkSet("Set5", 8, root=data_root)
    with pytest.raises(UsageError, match="LR source"):
        BenchmarkSet("Set5", 2, root=data_root, lr_source="opencv")


def _fake_benchmark(tmp_path, lr_shape):
    folder = tmp_path / "benchmark" / "Tiny" / "image_SRF_2"
    write_image(folder / "img_001_SRF_2_HR.png", RNG.integers(0, 256, (16, 12, 3), dtype=np.uint8))
    write_image(folder / "img_001_SRF_2_LR.png", RNG.integers(0, 256, lr_shape, dtype=np.uint8))
    return tmp_path


def test_shipped_lr_size_mismatch_is_an_error(tmp_path):
    root = _fake_benchmark(tmp_path, (8, 5, 3))
    assert BenchmarkSet("Tiny", 2, root=root)[0].lr.shape == (8, 6, 3)  # matlab LR is fine
    with pytest.raises(BinsrError, match="img_001_SRF_2_LR.png"):
        BenchmarkSet("Tiny", 2, root=root, lr_source="shipped")[0]


def test_image_folder_modcrops_and_keeps_gray(tmp_path):
    write_image(tmp_path / "b.png", RNG.integers(0, 256, (13, 10), dtype=np.uint8))
    write_image(tmp_path / "a.bmp", RNG.integers(0, 256, (9, 14, 3), dtype=np.uint8))
    (tmp_path / "notes.txt").write_text("ignored")
    data = ImageFolder(tmp_path, 4)
    assert [p.name for p in data] == ["a", "b"]
    assert data[0].hr.shape == (8, 12, 3) and data[0].lr.shape == (2, 3, 3)
    assert data[1].hr.shape == (12, 8) and data[1].lr.shape == (3, 2)
    with pytest.raises(UsageError):
        ImageFolder(tmp_path / "missing", 2)


@pytest.fixture
def train_dirs(tmp_path):
    a, b = tmp_path / "train" / "T91", tmp_path / "train" / "BSD200"
    write_image(a / "x.png", RNG.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    write_image(a / "gray.png", RNG.integers(0, 256, (24, 26), dtype=np.uint8))
    write_image(b / "y.png", RNG.integers(0, 256, (20, 20, 3), dtype=np.uint8))
    write_image(b / "small.png", RNG.integers(0, 256, (8, 30, 3), dtype=np.uint8))
    return tmp_path


def _symmetries(a):
    return [np.rot90(a, k % 4)[:, ::-1] if k >= 4 else np.rot90(a, k % 4) for k in range(8)]


def _crop_symmetries(image, patch):
    """The k for which some crop of ``image`` equals symmetry k of ``patch`` (a group: the inverse
    of a symmetry is one too, so ``patch = S(crop)`` iff ``crop`` is among ``_symmetries(patch)``)."""
    windows = np.lib.stride_tricks.sliding_window_view(image, patch.shape)
    return {k for k, sym in enumerate(_symmetries(patch)) if (windows == sym).all(axis=(-3, -2, -1)).any()}


def test_train_patches_shapes_determinism_and_lr(train_dirs):
    data = TrainPatches(scale=2, patch_size=12, seed=5, data_root=train_dirs)  # default T91 + BSD200
    assert len(data) == 3  # 'small' (8 px high) is skipped
    lr, hr = data[1]
    assert lr.dtype == hr.dtype == torch.float32 and lr.shape == (3, 6, 6) and hr.shape == (3, 12, 12)
    assert 0 <= hr.min() and hr.max() <= 1
    hr8 = (hr * 255).round().byte().permute(1, 2, 0).numpy()
    np.testing.assert_array_equal((lr * 255).round().byte().permute(1, 2, 0).numpy(), imresize(hr8, 0.5))
    again = TrainPatches(scale=2, patch_size=12, seed=5, data_root=train_dirs)
    for i in (0, 1, 2, 7, 1000):
        assert all(torch.equal(u, v) for u, v in zip(data[i], again[i]))
    assert not torch.equal(data[0][1], data[3][1])  # same image, new crop/flip
    before = data[0][1]
    data.set_epoch(1)
    assert not torch.equal(before, data[0][1])
    assert not torch.equal(data[0][1], TrainPatches(scale=2, patch_size=12, seed=6, data_root=train_dirs)[0][1])


def test_train_patches_are_crops_under_the_8_symmetries(train_dirs):
    image = read_image(train_dirs / "train" / "T91" / "x.png")
    data = TrainPatches([train_dirs / "train" / "T91"], scale=2, patch_size=8, augment=True)
    gray = data[0][1]  # files sort as gray.png, x.png: even indices are the gray image, as RGB
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    seen = set()
    for i in range(1, 61, 2):
        found = _crop_symmetries(image, (data[i][1] * 255).round().byte().permute(1, 2, 0).numpy())
        assert found, f"patch {i} is not a transformed crop"
        seen |= found
    assert len(seen) >= 6
    plain = TrainPatches([train_dirs / "train" / "T91"], scale=2, patch_size=8, augment=False)
    assert 0 in _crop_symmetries(image, (plain[1][1] * 255).round().byte().permute(1, 2, 0).numpy())


def test_train_patches_errors(train_dirs):
    with pytest.raises(UsageError, match="multiple"):
        TrainPatches([train_dirs / "train" / "T91"], scale=3, patch_size=8)
    with pytest.raises(UsageError, match="does not exist"):
        TrainPatches([train_dirs / "nope"], scale=2, patch_size=8)
    with pytest.raises(UsageError, match="no training images"):
        TrainPatches([train_dirs / "train" / "BSD200"], scale=2, patch_size=64)


def test_patch_sampling_by_area_and_texture(tmp_path):
    """``uniform`` draws each image equally often, ``area`` in proportion to its tiles (32 : 1),
    ``texture`` prefers textured tiles over flat ones; each draw depends on the index only."""
    folder = tmp_path / "train"
    folder.mkdir()
    big = np.full((64, 128, 3), 128, np.uint8)
    big[:, 64:] = RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)  # flat left half, noise right half
    write_image(folder / "big.png", big)
    write_image(folder / "small.png", np.full((16, 16, 3), 7, np.uint8))  # one flat tile

    def shares(sampling):
        data = TrainPatches([folder], scale=2, patch_size=16, augment=False, seed=1, sampling=sampling)
        assert len(data) == 2 and torch.equal(data[5][1], data[5][1])
        values = [data[i][1].mul(255).round().unique() for i in range(400)]
        small = np.mean([v.tolist() == [7.0] for v in values])
        flat = np.mean([v.numel() == 1 for v in values])
        return small, flat

    (u_small, _), (a_small, a_flat), (t_small, t_flat) = shares("uniform"), shares("area"), shares("texture")
    assert 0.4 < u_small < 0.6 and a_small < 0.1 and t_small < 0.1
    assert t_flat < 0.5 * a_flat
    with pytest.raises(UsageError, match="unknown sampling 'edges'"):
        TrainPatches([folder], scale=2, patch_size=16, sampling="edges")


def test_a_set_is_read_whole_or_fails_naming_the_image(tmp_path):
    """An HR image smaller than the scale made imresize raise IndexError, which ended Sequence
    iteration silently (``binsr eval`` reported 0 images, PSNR nan); now it is a BinsrError naming
    the file, and iteration goes through every index."""
    folder = tmp_path / "benchmark" / "Tiny" / "image_SRF_4"
    write_image(folder / "img_001_SRF_4_HR.png", RNG.integers(0, 256, (3, 3, 3), dtype=np.uint8))
    write_image(folder / "img_002_SRF_4_HR.png", RNG.integers(0, 256, (16, 20, 3), dtype=np.uint8))
    data = BenchmarkSet("Tiny", 4, root=tmp_path)
    with pytest.raises(BinsrError, match="img_001_SRF_4_HR.png is 3x3, smaller than one LR pixel at x4"):
        list(data)
    (folder / "img_001_SRF_4_HR.png").unlink()
    assert [p.name for p in BenchmarkSet("Tiny", 4, root=tmp_path)] == ["img_002_SRF_4_HR"]
    with pytest.raises(ValueError, match="non-empty"):
        imresize(np.zeros((0, 4, 3), np.uint8), 0.5)
