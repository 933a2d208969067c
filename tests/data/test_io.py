"""Image I/O: modes, bit depths, alpha, EXIF orientation, atomic writes and readable errors."""

import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from binsr.data import read_image, read_image_alpha, write_image
from binsr.data.io import read_image_info
from binsr.errors import BinsrError, UsageError

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
GRAY = RNG.integers(0, 256, (5, 7), dtype=np.uint8)
ALPHA = RNG.integers(0, 256, (5, 7), dtype=np.uint8)


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif", ".webp"])
@pytest.mark.parametrize("kind", ["gray", "rgb"])
def test_lossless_roundtrip(tmp_path, ext, kind):
    img = GRAY if kind == "gray" else RGB
    out = read_image(write_image(tmp_path / f"a{ext}", img))
    if ext == ".webp" and kind == "gray":  # WebP has no gray mode: stored as R = G = B
        img = np.repeat(img[..., None], 3, axis=2)
    assert out.dtype == np.uint8 and out.shape == img.shape  # gray stays HW, colour stays HWC
    np.testing.assert_array_equal(out, img)


def test_jpeg_keeps_colour_and_gray(tmp_path):
    assert read_image(write_image(tmp_path / "c.jpg", RGB)).shape == RGB.shape
    assert read_image(write_image(tmp_path / "g.jpeg", GRAY)).shape == GRAY.shape
    # an RGB image whose channels are equal is still colour (HWC), never silently gray
    same = np.repeat(GRAY[..., None], 3, axis=2)
    assert read_image(write_image(tmp_path / "s.png", same)).shape == (5, 7, 3)


@pytest.mark.parametrize("base", [GRAY, RGB])
def test_alpha_is_returned_separately(tmp_path, base):
    img = np.dstack([base, ALPHA])
    path = write_image(tmp_path / "a.png", img)
    assert Image.open(path).mode == ("LA" if base.ndim == 2 else "RGBA")
    arr, alpha = read_image_alpha(path)
    np.testing.assert_array_equal(arr, base)
    np.testing.assert_array_equal(alpha, ALPHA)
    np.testing.assert_array_equal(read_image(path), base)
    assert read_image_alpha(write_image(tmp_path / "b.png", base))[1] is None


def test_palette_images(tmp_path):
    Image.fromarray(RGB).quantize(16).save(tmp_path / "p.png")
    out = read_image(tmp_path / "p.png")
    expected = np.asarray(Image.open(tmp_path / "p.png").convert("RGB"))
    np.testing.assert_array_equal(out, expected)
    pal = Image.fromarray(RGB).quantize(16)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "t.png", transparency=0)
    arr, alpha = read_image_alpha(tmp_path / "t.png")
    assert arr.shape == (5, 7, 3) and alpha is not None and alpha.min() == 0


def test_16bit_gray_from_pillow(tmp_path):
    g16 = (GRAY.astype(np.uint16) * 257 + 3).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "g.png")
    assert Image.open(tmp_path / "g.png").mode.startswith("I")
    out = read_image(tmp_path / "g.png")
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, g16)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16bit_roundtrip(tmp_path, channels):
    img = RNG.integers(0, 65536, (6, 9, channels), dtype=np.uint16)
    path = write_image(tmp_path / "a.png", img if channels > 1 else img[..., 0])
    arr, alpha = read_image_alpha(path)
    assert arr.dtype == np.uint16
    colour = img[..., :3] if channels >= 3 else img[..., 0]
    np.testing.assert_array_equal(arr, colour)
    if channels in (2, 4):
        np.testing.assert_array_equal(alpha, img[..., -1])


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 9), st.integers(1, 9), st.sampled_from([1, 2, 3, 4]), st.sampled_from([np.uint8, np.uint16]),
       st.integers(0, 9), st.integers(1, 64), st.integers(0, 2**32 - 1))
def test_png_writer_whole_and_streamed_decode_to_the_pixels(h, w, channels, dtype, level, block, seed):
    """write_png in one libdeflate call and streamed through zlib in row blocks of any size give
    files that libpng (imagecodecs) decodes to the same pixels, at every level."""
    import io

    import imagecodecs

    from binsr.data import io as bio

    img = np.random.default_rng(seed).integers(0, np.iinfo(dtype).max + 1, (h, w, channels), dtype=dtype)
    for stream_bytes in (bio._PNG_STREAM_BYTES, 0):
        buf = io.BytesIO()
        old, bio._PNG_STREAM_BYTES = bio._PNG_STREAM_BYTES, stream_bytes
        try:
            bio.write_png(buf, img, level=level, block_bytes=block)
        finally:
            bio._PNG_STREAM_BYTES = old
        got = imagecodecs.png_decode(buf.getvalue())
        np.testing.assert_array_equal(got.reshape(img.shape), img)


def _png16_all_filters(img: np.ndarray) -> bytes:
    """Encode with every PNG filter type (row y uses filter y % 5), straight from the PNG spec."""
    h, w, c = img.shape
    raw = img.astype(">u2").view(np.uint8).reshape(h, w * 2 * c).astype(np.int64)
    bpp = 2 * c
    lines = []
    for y in range(h):
        x, up = raw[y], raw[y - 1] if y else np.zeros_like(raw[y])
        left = np.concatenate([np.zeros(bpp, np.int64), x[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, np.int64), up[:-bpp]])
        p = left + up - upleft
        pa, pb, pc = abs(p - left), abs(p - up), abs(p - upleft)
        paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
        pred = [0, left, up, (left + up) // 2, paeth][y % 5]
        lines.append(bytes([y % 5]) + ((x - pred) % 256).astype(np.uint8).tobytes())

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, {3: 2, 4: 6}[c], 0, 0, 0)
    idat = zlib.compress(b"".join(lines))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_16bit_colour_png_with_every_filter(tmp_path):
    img = RNG.integers(0, 65536, (10, 6, 3), dtype=np.uint16)
    (tmp_path / "f.png").write_bytes(_png16_all_filters(img))
    assert np.asarray(Image.open(tmp_path / "f.png")).dtype == np.uint8  # what Pillow alone gives
    np.testing.assert_array_equal(read_image(tmp_path / "f.png"), img)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation(tmp_path, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(RGB).save(tmp_path / "o.png", exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o.png")))
    np.testing.assert_array_equal(read_image(tmp_path / "o.png"), expected)


def _corrupt_files(tmp_path):
    good = write_image(tmp_path / "good.png", RGB).read_bytes()
    jpeg = write_image(tmp_path / "good.jpg", np.tile(RGB, (20, 20, 1))).read_bytes()
    png16 = _png16_all_filters(RNG.integers(0, 65536, (4, 4, 3), dtype=np.uint16))
    files = {
        "empty.png": b"",
        "text.png": b"this is not an image\n",
        "truncated.png": good[: len(good) // 2],
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "baddata16.png": bytearray(png16),
        "badcrc16.png": bytearray(png16),
    }
    files["baddata16.png"][50] ^= 0xFF  # a byte inside the IDAT data
    files["badcrc16.png"][png16.index(b"IEND") - 5] ^= 0xFF  # the IDAT checksum
    for name, data in files.items():
        (tmp_path / name).write_bytes(bytes(data))
    return [tmp_path / name for name in files] + [tmp_path / "missing.png"]


def test_unreadable_files_raise_binsr_error_naming_the_file(tmp_path):
    for path in _corrupt_files(tmp_path):
        with pytest.raises(BinsrError, match=path.name):
            read_image(path)


def test_write_refuses_to_overwrite_and_is_atomic(tmp_path):
    path = write_image(tmp_path / "sub" / "x.png", RGB)  # parent folders are created
    with pytest.raises(UsageError, match="x.png"):
        write_image(path, GRAY)
    np.testing.assert_array_equal(read_image(path), RGB)
    write_image(path, GRAY, overwrite=True)
    np.testing.assert_array_equal(read_image(path), GRAY)
    assert [p.name for p in path.parent.iterdir()] == ["x.png"]  # no temporary files left


def test_write_rejects_bad_requests(tmp_path):
    with pytest.raises(UsageError):
        write_image(tmp_path / "a.jpg", RGB.astype(np.uint16))
    with pytest.raises(UsageError):
        write_image(tmp_path / "a.jpg", np.dstack([RGB, ALPHA]))
    with pytest.raises(UsageError):
        write_image(tmp_path / "a.xyz", RGB)
    with pytest.raises(ValueError):
        write_image(tmp_path / "a.png", RGB.astype(np.float32))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_16bit_tiff_roundtrip_by_tifffile(tmp_path, channels):
    """Every 16-bit TIFF layout binsr writes reads back exactly, with its ICC profile."""
    img = RNG.integers(0, 65536, (6, 9, channels), dtype=np.uint16)
    path = write_image(tmp_path / "a.tif", img if channels > 1 else img[..., 0], icc_profile=b"icc" * 50)
    arr, alpha = read_image_alpha(path)
    np.testing.assert_array_equal(arr, img[..., :3] if channels >= 3 else img[..., 0])
    if channels == 4:
        np.testing.assert_array_equal(alpha, img[..., -1])
    assert read_image_info(tmp_path / "a.tif")[2]["icc_profile"] == b"icc" * 50


@pytest.mark.parametrize("compression", ["zlib", "lzw", "packbits"])
@pytest.mark.parametrize("planar", ["contig", "separate"])
def test_compressed_and_planar_16bit_tiffs_are_exact(tmp_path, compression, planar):
    """Pillow reads these at 8 bits (or not at all); tifffile keeps all 16."""
    import tifffile

    img = RNG.integers(0, 65536, (7, 5, 3), dtype=np.uint16)
    data = np.moveaxis(img, -1, 0) if planar == "separate" else img
    tifffile.imwrite(tmp_path / "c.tif", data, photometric="rgb", planarconfig=planar, compression=compression,
                     rowsperstrip=2)
    np.testing.assert_array_equal(read_image(tmp_path / "c.tif"), img)


def test_gif_is_its_first_frame_with_a_note(tmp_path):
    frames = [Image.fromarray(np.full((5, 7, 3), v, np.uint8)).convert("P") for v in (51, 204)]  # web palette
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    arr, _, info = read_image_info(tmp_path / "a.gif")
    assert arr.shape == (5, 7, 3) and (arr == 51).all()
    assert info["notes"] == ["animated GIF: only its first frame is read"]
    Image.fromarray(RGB).convert("P").save(tmp_path / "still.gif")
    assert read_image_info(tmp_path / "still.gif")[2]["notes"] == []


def test_interlaced_16bit_png(tmp_path):
    """Adam7 (PNG spec section 8.2), filter 0 rows: the capped inflate counts the seven passes' rows."""
    img = RNG.integers(0, 65536, (11, 13, 3), dtype=np.uint16)
    rows = b""
    for x0, y0, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)):
        sub = img[y0::dy, x0::dx]
        if sub.size:
            rows += b"".join(b"\0" + row.astype(">u2").tobytes() for row in sub)

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", 13, 11, 16, 2, 0, 0, 1)
    (tmp_path / "i.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows))
                                     + chunk(b"IEND", b""))
    np.testing.assert_array_equal(read_image(tmp_path / "i.png"), img)


@given(width=st.integers(1, 40), height=st.integers(1, 40), channels=st.sampled_from([1, 2, 3, 4]),
       depth=st.sampled_from([8, 16]), interlaced=st.booleans())
@settings(max_examples=60, deadline=None)
def test_png_data_size_is_what_an_encoder_writes(width, height, channels, depth, interlaced):
    """The size the capped inflate allows is exactly the filtered scanlines of the geometry (each
    Adam7 pass's rows, a filter byte each), so no valid file is refused and nothing more inflates."""
    from binsr.data.io import _ADAM7, _png_data_size

    img = np.zeros((height, width, channels), np.uint8 if depth == 8 else ">u2")
    passes = _ADAM7 if interlaced else ((0, 0, 1, 1),)
    written = sum(len(b"\0" + row.tobytes()) for x0, y0, dx, dy in passes for row in img[y0::dy, x0::dx] if row.size)
    assert _png_data_size(width, height, depth * channels, interlaced) == written


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "RGBA"])
@pytest.mark.parametrize("fmt", ["BMP", "PNG", "TIFF", "GIF"])
def test_every_bit_depth_passes_the_geometry_check(tmp_path, mode, fmt):
    """The bytes-per-pixel bound uses each file's own bit depth: 1-bit and palette files, the
    densest, are not mistaken for size-lying ones."""
    if fmt == "GIF" and mode == "RGBA":
        pytest.skip("GIF has no alpha channel")
    im = Image.fromarray(np.random.default_rng(0).integers(0, 256, (100, 120, 3), dtype=np.uint8)).convert(mode)
    im.save(tmp_path / f"a.{fmt.lower()}", format=fmt)
    assert read_image(tmp_path / f"a.{fmt.lower()}").shape[:2] == (100, 120)
