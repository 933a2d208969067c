"""``binsr upscale`` and ``binsr.upscale``: every input kind, bad files, overwrite safety, exit codes, tiling, backends.

A tiny random-init x2 SRResNet-lite (8 features, 1 block, receptive radius 4 LR pixels) keeps the
whole file to a few seconds; the zoo is replaced by a temporary folder where a test needs one.
"""

import io
import json
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import binsr
from binsr.cli import main
from binsr.data import read_image, read_image_alpha
from binsr.data.io import read_image_info
from binsr.errors import BinsrError, UsageError
from binsr.infer import load_upscaler, self_ensemble, upscale_array, with_self_ensemble

RNG = np.random.default_rng(7)
ICC = b"binsr-test-icc-profile" * 4


def _smooth(h, w, channels=3, dtype=np.uint8):
    """A smooth random image (upsampled noise), like a photo rather than white noise."""
    small = RNG.random((max(2, h // 4), max(2, w // 4), channels))
    t = torch.nn.functional.interpolate(torch.from_numpy(small).permute(2, 0, 1)[None], size=(h, w), mode="bicubic")
    arr = t[0].permute(1, 2, 0).clamp(0, 1).numpy()
    peak = 255 if dtype == np.uint8 else 65535
    arr = np.round(arr * peak).astype(dtype)
    return arr[..., 0] if channels == 1 else arr


def _tiny(scale):
    from binsr.models import create

    torch.manual_seed(scale)
    return create("srresnet_lite", scale=scale, recipe="e2fif", num_feat=8, num_block=1)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from binsr.train.checkpoint import save_weights

    path = tmp_path_factory.mktemp("model") / "tiny_x2.safetensors"
    save_weights(path, _tiny(2))
    return str(path)


def _run(capsys, *argv):
    rc = main(["upscale", *map(str, argv), "--quiet"])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out, err


def _exif_rotated_jpeg(path, w, h):
    im = Image.fromarray(_smooth(h, w))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    im.save(path, exif=exif, quality=95)


def test_every_input_kind(tmp_path, weights, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_smooth(20, 24)).save(src / "rgb.png", icc_profile=ICC)
    Image.fromarray(_smooth(20, 24, 1)).save(src / "gray.png")
    Image.fromarray(np.dstack([_smooth(18, 22), _smooth(18, 22, 1)]), "RGBA").save(src / "rgba.png")
    Image.fromarray(np.dstack([_smooth(18, 22, 1), _smooth(18, 22, 1)]), "LA").save(src / "la.png")
    Image.fromarray(_smooth(16, 20)).convert("P", palette=Image.Palette.ADAPTIVE).save(src / "pal.png")
    from binsr.data import write_image

    write_image(src / "rgb16.png", _smooth(16, 20, 3, np.uint16))
    write_image(src / "gray16.tif", _smooth(16, 20, 1, np.uint16))
    write_image(src / "rgba16.tif", _smooth(16, 20, 4, np.uint16), icc_profile=ICC)
    _exif_rotated_jpeg(src / "rot.jpg", 24, 16)
    Image.fromarray(_smooth(16, 20)).save(src / "photo.webp", lossless=True, icc_profile=ICC)
    Image.fromarray(_smooth(16, 20)).save(src / "old.bmp")
    Image.fromarray(_smooth(16, 20)).save(src / "scan.tiff")
    out = tmp_path / "out"
    rc, stdout, _ = _run(capsys, src, "-o", out, "--model", weights, "--ext", "same", "--tile", 16, "--tile-overlap", 8)
    assert rc == 0 and "upscaled 12 images" in stdout and "0 failed" in stdout

    def check(name, shape, dtype=np.uint8, has_alpha=False):
        arr, alpha = read_image_alpha(out / name)
        assert arr.shape == shape and arr.dtype == dtype, name
        assert (alpha is not None) == has_alpha, name
        if has_alpha:
            assert alpha.shape == shape[:2] and alpha.dtype == dtype

    check("rgb_x2.png", (40, 48, 3))
    check("gray_x2.png", (40, 48))
    assert Image.open(out / "gray_x2.png").mode == "L"
    check("rgba_x2.png", (36, 44, 3), has_alpha=True)
    check("la_x2.png", (36, 44), has_alpha=True)
    check("pal_x2.png", (32, 40, 3))
    check("rgb16_x2.png", (32, 40, 3), np.uint16)
    check("gray16_x2.tif", (32, 40), np.uint16)
    check("rgba16_x2.tif", (32, 40, 3), np.uint16, has_alpha=True)
    assert read_image_info(out / "rgba16_x2.tif")[2]["icc_profile"] == ICC
    check("rot_x2.jpg", (48, 32, 3))  # EXIF orientation applied: 24x16 (w x h) shown as 16x24
    check("photo_x2.webp", (32, 40, 3))
    check("old_x2.bmp", (32, 40, 3))
    check("scan_x2.tiff", (32, 40, 3))
    assert read_image_info(out / "rgb_x2.png")[2]["icc_profile"] == ICC
    assert read_image_info(out / "photo_x2.webp")[2]["icc_profile"] == ICC
    assert not list(out.glob(".*"))  # no temporary files left


def test_alpha_is_bicubic_and_16bit_keeps_precision(tmp_path, weights, capsys):
    from binsr.data import imresize, write_image

    rgba = np.dstack([_smooth(20, 20), _smooth(20, 20, 1)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    rgb16 = _smooth(20, 20, 3, np.uint16)
    write_image(tmp_path / "b.png", rgb16)
    out = tmp_path / "out"
    rc, _, _ = _run(capsys, tmp_path / "a.png", tmp_path / "b.png", "-o", out, "--model", weights,
                    "--tile", 12, "--tile-overlap", 8)
    assert rc == 0
    _, alpha = read_image_alpha(out / "a_x2.png")
    np.testing.assert_array_equal(alpha, imresize(rgba[..., 3], 2))  # tiled alpha == whole-image bicubic
    sr16 = read_image(out / "b_x2.png")
    assert np.any(sr16 % 257 != 0)  # real 16-bit values, not 8 bits scaled up


def test_bad_files_are_reported_and_skipped(tmp_path, weights, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_smooth(16, 16)).save(src / "good.png")
    buf = io.BytesIO()
    Image.fromarray(_smooth(64, 64)).save(buf, format="PNG")
    (src / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (src / "notes.jpg").write_text("this is not an image\n")
    (src / "empty.png").write_bytes(b"")
    Image.new("L", (300, 300)).save(src / "bomb.png")  # over --max-pixels below
    out = tmp_path / "out"
    rc, stdout, err = _run(capsys, src, tmp_path / "missing.png", "-o", out, "--model", weights,
                           "--max-pixels", 50_000)
    assert rc == 1
    assert [p.name for p in out.iterdir()] == ["good_x2.png"]
    lines = [line for line in err.splitlines() if "failed:" in line]
    assert len(lines) == 5
    for name in ("truncated.png", "notes.jpg", "empty.png", "bomb.png", "missing.png"):
        assert sum(name in line for line in lines) == 1, name
    assert "decompression bomb" in err
    assert "upscaled 1 image " in stdout and "5 failed" in stdout


def test_png_level_and_failed_writes(tmp_path, weights, capsys, monkeypatch):
    """--png-level changes the file, never the pixels; a write that fails (written while the next
    image is upscaled) is reported against its own input, and the others are still written."""
    for name in ("a", "b", "c"):
        Image.fromarray(_smooth(24, 20)).save(tmp_path / f"{name}.png")
    fast, small = tmp_path / "fast", tmp_path / "small"
    assert _run(capsys, tmp_path / "a.png", "-o", fast, "--model", weights)[0] == 0  # default level 1
    assert _run(capsys, tmp_path / "a.png", "-o", small, "--model", weights, "--png-level", "9")[0] == 0
    np.testing.assert_array_equal(read_image(fast / "a_x2.png"), read_image(small / "a_x2.png"))
    assert (fast / "a_x2.png").read_bytes() != (small / "a_x2.png").read_bytes()
    with pytest.raises(SystemExit) as exc:
        main(["upscale", str(tmp_path / "a.png"), "-o", str(fast), "--png-level", "10"])
    assert exc.value.code == 2

    import binsr.data.io as io_mod

    real = io_mod.write_image

    def flaky(path, *a, **kw):
        if path.name.startswith("b"):
            raise OSError("disk full")
        return real(path, *a, **kw)

    monkeypatch.setattr(io_mod, "write_image", flaky)
    out = tmp_path / "out"
    rc, stdout, err = _run(capsys, tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png", "-o", out,
                           "--model", weights)
    assert rc == 1 and sorted(p.name for p in out.iterdir()) == ["a_x2.png", "c_x2.png"]
    assert [line for line in err.splitlines() if "failed:" in line] == [
        f"binsr upscale: failed: {tmp_path / 'b.png'}: OSError: disk full"]
    assert "upscaled 2 images " in stdout and "1 failed" in stdout


def test_never_overwrites_without_flag(tmp_path, weights, capsys):
    Image.fromarray(_smooth(16, 16)).save(tmp_path / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a_x2.png").write_bytes(b"precious")
    rc, _, err = _run(capsys, tmp_path / "a.png", "-o", out, "--model", weights)
    assert rc == 1 and "--overwrite" in err
    assert (out / "a_x2.png").read_bytes() == b"precious"
    rc, _, _ = _run(capsys, tmp_path / "a.png", "-o", out, "--model", weights, "--overwrite")
    assert rc == 0 and read_image(out / "a_x2.png").shape == (32, 32, 3)
    assert [p.name for p in out.iterdir()] == ["a_x2.png"]


def test_usage_errors_exit_2(tmp_path, weights, capsys):
    Image.fromarray(_smooth(16, 16)).save(tmp_path / "a.png")
    out = tmp_path / "out"
    rc, _, err = _run(capsys, tmp_path / "a.png", "-o", out, "--model", weights, "--scale", 4)
    assert rc == 2 and "x2 model, not x4" in err and len(err.strip().splitlines()) == 1
    rc, _, err = _run(capsys, tmp_path / "a.png", "-o", out, "--model", tmp_path / "nope.safetensors")
    assert rc == 2 and len(err.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    rc, _, err = _run(capsys, tmp_path / "empty", "-o", out, "--model", weights)
    assert rc == 2 and "no images" in err
    rc, _, _ = _run(capsys, tmp_path / "a.png", "-o", out, "--model", weights, "--tile", -1)
    assert rc == 2
    assert not out.exists()
    (tmp_path / "file").write_text("x")  # -o below a file: one line, not a failure per image
    rc, _, err = _run(capsys, tmp_path / "a.png", "-o", tmp_path / "file" / "out", "--model", weights)
    assert rc == 2 and "cannot be created: " in err and "file is not a folder" in err and len(err.strip().splitlines()) == 1


def test_tiled_equals_untiled_on_both_backends(tmp_path, weights, capsys):
    Image.fromarray(_smooth(45, 61)).save(tmp_path / "a.png")
    Image.fromarray(_smooth(45, 61, 1)).save(tmp_path / "g.png")
    results = {}
    for backend in ("engine", "torch"):
        for tile in (0, 16, 24):
            out = tmp_path / f"{backend}{tile}"
            # overlap 10: used pixels are >= 5 LR pixels from an inner tile edge > radius 4
            rc, stdout, _ = _run(capsys, tmp_path / "a.png", tmp_path / "g.png", "-o", out, "--model", weights,
                                 "--backend", backend, "--tile", tile, "--tile-overlap", 10, "--threads", 1)
            assert rc == 0 and f"{backend} backend" in stdout
            results[backend, tile] = [read_image(out / n).astype(int) for n in ("a_x2.png", "g_x2.png")]
    for (backend, tile), imgs in results.items():
        for img, ref in zip(imgs, results[backend, 0]):
            assert img.shape == ref.shape
            assert np.abs(img - ref).max() <= 1, (backend, tile)
    for img, ref in zip(results["engine", 0], results["torch", 0]):  # the project's engine-vs-PyTorch rule
        diff = np.abs(img - ref)
        assert diff.max() <= 1 and (diff == 0).mean() >= 0.999, (diff.max(), (diff == 0).mean())


def test_packed_model_and_export_fallback(tmp_path, weights, capsys):
    from binsr.deploy import export_packed
    from binsr.models import create
    from binsr.train.checkpoint import save_weights

    Image.fromarray(_smooth(16, 16)).save(tmp_path / "a.png")
    packed = tmp_path / "tiny.bsr"
    export_packed(_tiny(2), packed)
    rc, stdout, _ = _run(capsys, tmp_path / "a.png", "-o", tmp_path / "o1", "--model", packed)
    assert rc == 0 and read_image(tmp_path / "o1" / "a_x2.png").shape == (32, 32, 3)
    rc, _, err = _run(capsys, tmp_path / "a.png", "-o", tmp_path / "o2", "--model", packed, "--backend", "torch")
    assert rc == 2 and "engine" in err
    # a packed model needs no torch: an RGBA picture (alpha resized by imresize) upscaled in a fresh process
    Image.fromarray(_smooth(12, 10, 4)).save(tmp_path / "rgba.png")
    code = ("import sys; from binsr.cli import main; "
            f"rc = main(['upscale', {str(tmp_path / 'rgba.png')!r}, '-o', {str(tmp_path / 'o4')!r}, "
            f"'--model', {str(packed)!r}, '--quiet']); print(rc, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split()[-2:] == ["0", "False"], out.stderr
    assert read_image_alpha(tmp_path / "o4" / "rgba_x2.png")[1].shape == (24, 20)
    espcn = tmp_path / "espcn.safetensors"
    save_weights(espcn, create("espcn", scale=2, recipe="e2fif"))
    rc, stdout, err = _run(capsys, tmp_path / "a.png", "-o", tmp_path / "o3", "--model", espcn)
    assert rc == 0 and "using the PyTorch backend" in err and "torch backend" in stdout
    assert read_image(tmp_path / "o3" / "a_x2.png").shape == (32, 32, 3)


def test_folders_recursive_globs_suffix_ext(tmp_path, weights, capsys):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(_smooth(12, 12)).save(src / "a.png")
    Image.fromarray(_smooth(12, 12)).save(src / "sub" / "b.jpg")
    rc, _, _ = _run(capsys, src, "-o", tmp_path / "flat", "--model", weights)
    assert rc == 0 and sorted(p.name for p in (tmp_path / "flat").rglob("*.*")) == ["a_x2.png"]
    rc, _, _ = _run(capsys, src, "-o", tmp_path / "rec", "--model", weights, "--recursive", "--suffix", "_big",
                    "--ext", "webp")
    assert rc == 0
    assert sorted(str(p.relative_to(tmp_path / "rec")) for p in (tmp_path / "rec").rglob("*.*")) == \
        ["a_big.webp", "sub/b_big.webp"]
    rc, _, _ = _run(capsys, str(src / "**" / "*.jpg"), "-o", tmp_path / "glob", "--model", weights, "--recursive",
                    "--ext", "jpg")
    assert rc == 0 and [p.name for p in (tmp_path / "glob").iterdir()] == ["b_x2.jpg"]


def test_default_model_is_the_zoo_model_for_the_scale(tmp_path, capsys, monkeypatch):
    from binsr import pretrained
    from binsr.models import repack_zoo
    from binsr.train.checkpoint import save_weights

    zoo = tmp_path / "zoo"
    zoo.mkdir()
    tiny = _tiny(4)
    save_weights(zoo / "tiny_x4.safetensors", tiny)
    card = {"name": "tiny_x4", "model": "srresnet_lite", "recipe": "e2fif", "scale": 4,
            "kwargs": tiny.signature["kwargs"]}  # a card names every kwarg its file was saved with
    (zoo / "tiny_x4.json").write_text(json.dumps(card))
    monkeypatch.setattr(pretrained, "ZOO_DIR", zoo)
    Image.fromarray(_smooth(10, 12)).save(tmp_path / "a.png")
    rc, stdout, _ = _run(capsys, tmp_path / "a.png", "-o", tmp_path / "out")
    assert rc == 0 and "zoo:tiny_x4" in stdout and read_image(tmp_path / "out" / "a_x4.png").shape == (40, 48, 3)
    # with the entry's packed file the engine runs it directly (no torch module), with the same output
    assert load_upscaler("zoo:tiny_x4").module is not None
    assert repack_zoo() == [zoo / "tiny_x4.bsr"]
    assert load_upscaler("zoo:tiny_x4").module is None
    rc, _, _ = _run(capsys, tmp_path / "a.png", "-o", tmp_path / "packed")
    assert rc == 0 and (tmp_path / "packed" / "a_x4.png").read_bytes() == (tmp_path / "out" / "a_x4.png").read_bytes()
    rc, _, err = _run(capsys, tmp_path / "a.png", "-o", tmp_path / "out2", "--scale", 2)
    assert rc == 2 and "no zoo model for x2" in err
    rc, _, err = _run(capsys, tmp_path / "a.png", "-o", tmp_path / "out2", "--model", "zoo:tiny_x4", "--scale", 3)
    assert rc == 2 and "x4 model, not x3" in err


# ------------------------------------------------------------------ the Python API: binsr.upscale


@pytest.fixture(scope="module")
def model():  # the same tiny x2 network as a module
    return _tiny(2).eval()


def test_default_upscale_needs_no_torch(tmp_path):
    """The default x4 zoo model runs from its shipped packed file: torch is never imported."""
    Image.fromarray(_smooth(12, 10)).save(tmp_path / "a.png")
    code = ("import sys; from binsr.cli import main; "
            f"rc = main(['upscale', {str(tmp_path / 'a.png')!r}, '-o', {str(tmp_path / 'o')!r}, '--quiet']); "
            "print(rc, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split()[-2:] == ["0", "False"], out.stderr
    assert read_image(tmp_path / "o" / "a_x4.png").shape == (48, 40, 3)


def test_import_binsr_stays_light():
    code = "import sys, binsr; print('torch' in sys.modules, 'numpy' in sys.modules, callable(binsr.upscale))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "True"]


@pytest.mark.parametrize("backend", ["engine", "torch"])
def test_arrays_keep_layout_and_dtype(model, backend):
    rgb = RNG.integers(0, 256, (14, 18, 3), dtype=np.uint8)
    up = load_upscaler(model, backend=backend, threads=1)
    assert up.backend == backend and up.scale == 2
    cases = {
        "rgb": (rgb, (28, 36, 3)),
        "gray": (rgb[..., 0], (28, 36)),
        "rgba": (np.dstack([rgb, rgb[..., :1]]), (28, 36, 4)),
        "la": (np.dstack([rgb[..., 0], rgb[..., 1]]), (28, 36, 2)),
        "rgb16": (rgb.astype(np.uint16) * 257, (28, 36, 3)),
    }
    for name, (img, shape) in cases.items():
        out = binsr.upscale(img, model=up, tile=8, tile_overlap=4)
        assert out.shape == shape and out.dtype == img.dtype, name
    f = binsr.upscale(rgb / 255.0, model=up, tile=None)  # float64 in, float64 out (the README's promise)
    assert f.dtype == np.float64 and f.shape == (28, 36, 3)
    f32 = binsr.upscale((rgb / 255.0).astype(np.float32), model=up, tile=None)
    assert f32.dtype == np.float32 and np.array_equal(f32, f.astype(np.float32))
    # gray = channel mean of the model's output on R = G = B (float in, float out: unclipped)
    gray = rgb[..., 0] / 255.0
    g = binsr.upscale(gray, model=up, tile=None)
    rep = binsr.upscale(np.repeat(gray[..., None], 3, axis=2), model=up, tile=None)
    assert g.shape == (28, 36) and np.abs(g - rep.mean(axis=2)).max() < 1e-5


def test_paths_and_pil_images_match_arrays(model, tmp_path):
    rgb = RNG.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    up = load_upscaler(model, backend="torch")
    ref = binsr.upscale(rgb, model=up)
    np.testing.assert_array_equal(binsr.upscale(tmp_path / "a.png", model=up), ref)
    np.testing.assert_array_equal(binsr.upscale(Image.open(tmp_path / "a.png"), model=up), ref)
    with pytest.raises(UsageError, match="not x3"):
        binsr.upscale(rgb, model=model, scale=3)
    with pytest.raises(UsageError, match="backend"):
        binsr.upscale(rgb, model=model, backend="gpu")


def test_tiles_cover_odd_sizes_and_seams_blend(model):
    img = RNG.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    up = load_upscaler(model, backend="engine", threads=1)
    full = upscale_array(up, img, tile=None)
    for tile, overlap in [(8, 10), (16, 10), (20, 12), (36, 9)]:
        tiled = upscale_array(up, img, tile=tile, overlap=overlap)
        assert np.abs(tiled.astype(int) - full).max() <= 1, (tile, overlap)


def test_engine_threads_run_tiles_side_by_side_on_lanes(model):
    """With several threads the engine runs tiles at once, one per one-thread lane (Upscaler.map):
    the output is one thread's, bit for bit; lanes are made on first use; an error in a lane is the
    call's error and leaves no lane thread behind."""
    img = RNG.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    one = load_upscaler(model, backend="engine", threads=1)
    two = load_upscaler(model, backend="engine", threads=2)
    assert one.lane is None and two.lanes == 2 and two._made == 0
    make, together, first = two.lane, threading.Barrier(2, timeout=20), [2]
    lock = threading.Lock()

    def lane():
        f = make()

        def forward(x):
            with lock:
                wait, first[0] = first[0] > 0, first[0] - 1
            if wait:  # the first two tiles are in flight together (run one by one, this times out)
                together.wait()
            return f(x)

        return forward

    two.lane = lane
    for pixels, alpha in ((img, None), (img[..., 0], None), (img, img[..., 1])):
        for tile in (16, None):
            np.testing.assert_array_equal(upscale_array(two, pixels, alpha, tile=tile, overlap=6),
                                          upscale_array(one, pixels, alpha, tile=tile, overlap=6))
    assert two._made == 2

    def broken():
        def forward(x):
            raise BinsrError("lane failed")

        return forward

    bad = load_upscaler(model, backend="engine", threads=2)
    bad.lane = broken
    with pytest.raises(BinsrError, match="lane failed"):
        upscale_array(bad, img, tile=16, overlap=6)
    assert not [t for t in threading.enumerate() if t.name.startswith("binsr-lane")]

    def unmakeable():
        raise MemoryError("no room for a lane")

    short = load_upscaler(model, backend="engine", threads=2)
    short.lane = unmakeable
    for _ in range(2):  # a lane that could not be made is not counted: the next call tries again
        with pytest.raises(MemoryError):
            upscale_array(short, img, tile=16, overlap=6)
        assert short._made == 0  # (counted, the next call would wait for it forever)


def test_streamed_png_matches_the_whole_image_encoding(tmp_path, weights, capsys, monkeypatch):
    """Large PNGs are encoded in row blocks (no copy of the output); same pixels and ICC."""
    from binsr.data import io as bio

    Image.fromarray(np.dstack([_smooth(20, 26), _smooth(20, 26, 1)]), "RGBA").save(tmp_path / "a.png", icc_profile=ICC)
    Image.fromarray(_smooth(20, 26, 1)).save(tmp_path / "g.png")
    rc, _, _ = _run(capsys, tmp_path / "a.png", tmp_path / "g.png", "-o", tmp_path / "whole", "--model", weights)
    assert rc == 0
    monkeypatch.setattr(bio, "_PNG_STREAM_BYTES", 0)
    rc, _, _ = _run(capsys, tmp_path / "a.png", tmp_path / "g.png", "-o", tmp_path / "stream", "--model", weights)
    assert rc == 0
    for name in ("a_x2.png", "g_x2.png"):
        ref, ref_alpha, _ = read_image_info(tmp_path / "whole" / name)
        got, got_alpha, info = read_image_info(tmp_path / "stream" / name)
        np.testing.assert_array_equal(got, ref)
        assert (got_alpha is None) == (ref_alpha is None) and (got_alpha is None or np.array_equal(got_alpha, ref_alpha))
    assert read_image_info(tmp_path / "stream" / "a_x2.png")[2]["icc_profile"] == ICC


def test_names_stay_inside_outdir_and_never_replace_inputs(tmp_path, weights, capsys):
    """--suffix with a path separator or '..' is refused (exit 2), as are an output that would be
    an input (--suffix '' --ext same) and -o equal to an input folder; nothing is written."""
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_smooth(12, 12)).save(src / "a.png")
    before = (src / "a.png").read_bytes()
    out = tmp_path / "out"
    for suffix in ("/../../escaped", "_x/y", "..", "a\\b"):
        rc, _, err = _run(capsys, src / "a.png", "-o", out, "--model", weights, "--suffix", suffix)
        assert rc == 2 and "--suffix" in err and len(err.strip().splitlines()) == 1, suffix
    rc, _, err = _run(capsys, src / "a.png", "-o", src, "--model", weights, "--suffix", "", "--ext", "same",
                      "--overwrite")
    assert rc == 2 and "would replace the input" in err
    rc, _, err = _run(capsys, src, "-o", src, "--model", weights)
    assert rc == 2 and "is the input folder" in err and len(err.strip().splitlines()) == 1
    assert (src / "a.png").read_bytes() == before and [p.name for p in src.iterdir()] == ["a.png"]
    assert not out.exists() and not list(tmp_path.glob("**/escaped*"))


def test_skipped_files_are_named_and_gif_is_its_first_frame(tmp_path, weights, capsys):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    (src / "readme.txt").write_text("notes")
    (src / ".hidden.png").write_bytes(b"")
    frames = [Image.fromarray(_smooth(12, 10)).convert("P") for _ in range(3)]
    frames[0].save(src / "anim.gif", save_all=True, append_images=frames[1:])
    out = tmp_path / "out"
    rc, _, err = _run(capsys, src, "-o", out, "--model", weights, "--ext", "same")
    assert rc == 0 and [p.name for p in out.iterdir()] == ["anim_x2.png"]  # GIF is not written: PNG
    note = [line for line in err.splitlines() if "not read from" in line]
    assert len(note) == 1 and all(s in note[0] for s in ("readme.txt (not an image extension)",
                                                        "sub (a folder: pass --recursive)", ".hidden.png (hidden)"))
    assert "only its first frame" in err
    np.testing.assert_array_equal(read_image(out / "anim_x2.png").shape, (24, 20, 3))


def test_tile_too_small_fails_once_before_any_image(tmp_path, weights, capsys):
    for name in "abc":
        Image.fromarray(_smooth(12, 12)).save(tmp_path / f"{name}.png")
    rc, _, err = _run(capsys, *(tmp_path / f"{n}.png" for n in "abc"), "-o", tmp_path / "out", "--model", weights,
                      "--tile", 1)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "--tile must be at least" in err
    assert not (tmp_path / "out").exists()


def test_debug_does_not_turn_on_pillow_debug_log(tmp_path, weights, capsys):
    import logging

    Image.fromarray(_smooth(12, 12)).save(tmp_path / "a.png")
    assert main(["--debug", "upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--model", weights,
                 "--quiet"]) == 0
    assert logging.getLogger("PIL").getEffectiveLevel() > logging.DEBUG
    assert "STREAM" not in capsys.readouterr().err  # PngImagePlugin's per-chunk lines


def test_a_killed_run_leaves_no_temporary_behind_the_next(tmp_path, weights, capsys):
    """SIGKILL cannot be caught: the next run writing that name removes the dead run's temporary."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    out = tmp_path / "out"
    out.mkdir()
    (out / f".a_x2.png.{int(dead.stdout)}.00ff.tmp").write_bytes(b"")
    Image.fromarray(_smooth(12, 12)).save(tmp_path / "a.png")
    rc, _, _ = _run(capsys, tmp_path / "a.png", "-o", out, "--model", weights)
    assert rc == 0 and [p.name for p in out.iterdir()] == ["a_x2.png"]


def test_sigterm_ends_the_run_as_ctrl_c_does(tmp_path, weights):
    """SIGTERM during a run: the 'interrupted' line and exit 130 (temporaries are removed on the
    way out), not a silent kill."""
    import os
    import signal

    for name in "ab":
        Image.fromarray(_smooth(600, 600)).save(tmp_path / f"{name}.png")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from binsr.cli import main; sys.exit(main())",
                             "upscale", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(out),
                             "--model", weights, "--tile", "16", "--threads", "1"],
                            stderr=subprocess.PIPE)
    seen = b""
    while b"tile" not in seen:  # the progress bar: upscaling has begun
        chunk = proc.stderr.read1(4096)
        assert chunk, seen.decode(errors="replace")
        seen += chunk
    os.kill(proc.pid, signal.SIGTERM)
    err = (seen + proc.stderr.read()).decode(errors="replace")
    assert proc.wait(timeout=60) == 130 and "binsr upscale: interrupted" in err and "Traceback" not in err
    assert not list(tmp_path.glob("**/.*.tmp"))


# ------------------------------------------------------------------ self-ensemble (x8 flips and turns)


@given(h=st.integers(1, 9), w=st.integers(1, 9), channels=st.sampled_from([0, 3]), seed=st.integers(0, 2**16))
@settings(max_examples=40, deadline=None)
def test_self_ensemble_is_the_mean_of_the_eight_turned_back_outputs(h, w, channels, seed):
    """An equivariant forward (nearest-neighbour x2) comes back unchanged; any forward gives the
    mean over the 8 dihedral transforms of its input, each output turned back."""
    rng = np.random.default_rng(seed)
    x = rng.random((h, w, channels) if channels else (h, w)).astype(np.float32)
    nearest = lambda t: t.repeat(2, axis=0).repeat(2, axis=1)  # noqa: E731
    assert np.array_equal(self_ensemble(nearest)(x), nearest(x))
    weights = rng.random((2 * h + 2 * w) * 2)

    def skewed(t):  # depends on where a pixel is: not equivariant
        y = nearest(t).astype(np.float64)
        ramp = np.add.outer(weights[: y.shape[0]], weights[: y.shape[1]])
        return y * (ramp[..., None] if y.ndim == 3 else ramp)

    want = []
    for k in range(4):
        for flip in (False, True):
            t = np.rot90(x, k)
            y = skewed(t[:, ::-1] if flip else t)
            want.append(np.rot90(y[:, ::-1] if flip else y, -k))
    np.testing.assert_allclose(self_ensemble(skewed)(x), np.mean(want, axis=0), rtol=1e-12, atol=0)


@pytest.mark.parametrize("backend", ["engine", "torch"])
def test_self_ensemble_upscaler_on_both_backends_and_lanes(model, backend):
    """load_upscaler(self_ensemble=True) runs the model 8 times per tile; the engine's lanes
    ensemble as its forward does; binsr.upscale takes the flag."""
    img = RNG.integers(0, 256, (21, 26, 3), dtype=np.uint8)
    x = (img / 255.0).astype(np.float32)
    up = load_upscaler(model, backend=backend, threads=1)
    ens = with_self_ensemble(up)
    calls = []
    ens.forward = self_ensemble(lambda t: calls.append(t.shape) or up.forward(t))
    out = upscale_array(ens, x, tile=None)  # float in: float out, not rounded
    assert sorted(calls) == sorted([(21, 26, 3)] * 4 + [(26, 21, 3)] * 4)
    want = [np.rot90(up.forward(np.ascontiguousarray(np.rot90(x, k)[:, ::-1] if flip else np.rot90(x, k)))
                     [:, ::(-1 if flip else 1)], -k) for k in range(4) for flip in (False, True)]
    np.testing.assert_array_equal(out, np.mean(np.array(want, np.float64), axis=0).astype(np.float32))
    assert not np.array_equal(out, upscale_array(up, x, tile=None))
    np.testing.assert_array_equal(binsr.upscale(x, model=model, backend=backend, threads=1, tile=None,
                                                self_ensemble=True), out)
    if backend == "engine":
        two = load_upscaler(model, backend="engine", threads=2, self_ensemble=True)
        assert two.lanes == 2 and two.lane is not None
        np.testing.assert_array_equal(upscale_array(two, img, tile=8, overlap=4),
                                      upscale_array(load_upscaler(model, threads=1, self_ensemble=True), img,
                                                    tile=8, overlap=4))


def test_self_ensemble_flag_of_the_cli(tmp_path, weights, capsys):
    Image.fromarray(_smooth(14, 12)).save(tmp_path / "a.png")
    rc, _, err = _run(capsys, tmp_path / "a.png", "-o", tmp_path / "ens", "--self-ensemble", "--model", weights)
    assert rc == 0, err
    up = load_upscaler(weights, threads=1, self_ensemble=True)
    np.testing.assert_array_equal(read_image(tmp_path / "ens" / "a_x2.png"),
                                  upscale_array(up, read_image(tmp_path / "a.png"), tile=256, overlap=16))
