"""Image reading and writing: the only place binsr touches image files.

Arrays follow docs/CONVENTIONS.md: ``HWC`` RGB or ``HW`` gray, ``uint8`` or ``uint16``. Pillow does
the decoding, except for 16-bit colour PNGs, which Pillow silently reduces to 8 bits: those are
decoded (and all 16-bit PNGs are encoded) here with :mod:`zlib` (PNG spec, W3C 2003, sections 9
and 11). Colour stays colour and gray stays gray; alpha is returned separately.
"""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from binsr.errors import BinsrError, UsageError
from binsr.files import atomic_write, claim_output

__all__ = ["read_image", "read_image_alpha", "read_image_info", "write_image", "IMAGE_EXTENSIONS"]

#: extensions binsr reads and writes, with the Pillow format used to write them
IMAGE_EXTENSIONS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # PNG colour type -> samples per pixel
_EXIF_ORIENTATION = 0x0112
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as ``HW`` (gray) or ``HWC`` RGB, ``uint8`` or ``uint16``, EXIF-oriented.

    Alpha (RGBA, LA, transparent palettes) is dropped; use :func:`read_image_alpha` to keep it.
    Raises :class:`~binsr.errors.BinsrError` naming the file if it is missing or not a readable
    image (zero-size, truncated, corrupt, unsupported pixel type).
    """
    return read_image_alpha(path)[0]


def read_image_alpha(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Like :func:`read_image`, but also return the ``HW`` alpha plane (``None`` if opaque)."""
    arr, alpha, _ = read_image_info(path)
    return arr, alpha


def read_image_info(
    path: str | os.PathLike, max_pixels: int | None = None
) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Like :func:`read_image_alpha`, plus a dict about the file: ``format`` (Pillow's),
    ``mode`` (the Pillow mode before conversion), ``icc_profile`` (bytes or ``None``) and
    ``size`` (``(width, height)`` as stored, before the EXIF orientation).

    ``max_pixels``: refuse (``BinsrError``) an image with more pixels before decoding it, the
    guard against decompression bombs; ``None`` keeps only Pillow's own limit.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
                if width <= 0 or height <= 0:
                    raise BinsrError(f"empty image ({width}x{height})")
                if max_pixels is not None and width * height > max_pixels:
                    raise BinsrError(f"{width}x{height} = {width * height:,} pixels is over the limit of "
                                     f"{max_pixels:,} (decompression bomb guard; raise --max-pixels)")
                info = {"format": im.format, "mode": im.mode, "icc_profile": im.info.get("icc_profile"),
                        "size": (width, height)}
                tiff16 = _tiff16_colour(im, path)
                if tiff16 is None:
                    im.load()
                orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1))
                if tiff16 is not None:
                    arr, alpha = _split_alpha(tiff16)
                elif im.format == "PNG" and _png_is_16bit_colour(path):
                    arr, alpha = _split_alpha(_decode_png16(path.read_bytes()))
                else:
                    arr, alpha = _from_pil(im)
    except BinsrError as exc:
        raise BinsrError(f"cannot read image {path}: {exc}") from exc
    except FileNotFoundError as exc:
        raise BinsrError(f"cannot read image {path}: no such file") from exc
    except IsADirectoryError as exc:
        raise BinsrError(f"cannot read image {path}: is a folder") from exc
    except UnidentifiedImageError as exc:
        raise BinsrError(f"cannot read image {path}: not a recognised image file") from exc
    except _DECODE_ERRORS as exc:
        raise BinsrError(f"cannot read image {path}: {exc}") from exc
    arr = _orient(arr, orientation)
    return arr, None if alpha is None else _orient(alpha, orientation), info


def _from_pil(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    mode = im.mode
    if mode in ("P", "PA"):
        im = im.convert("RGBA" if mode == "PA" or "transparency" in im.info else "RGB")
    elif mode == "1":
        im = im.convert("L")
    elif mode == "La":
        im = im.convert("LA")
    elif mode == "RGBa":
        im = im.convert("RGBA")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        im = im.convert("RGB")
    if im.mode in ("L", "LA", "RGB", "RGBA"):
        return _split_alpha(np.asarray(im))
    if im.mode.startswith("I;16") or im.mode == "I":
        arr = np.asarray(im)
        if arr.min() < 0 or arr.max() > 65535:
            raise BinsrError(f"pixel values outside 16 bits (mode {im.mode})")
        return arr.astype(np.uint16), None
    raise BinsrError(f"unsupported pixel type (Pillow mode {mode})")


def _split_alpha(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    if arr.ndim == 3 and arr.shape[2] in (2, 4):
        return arr[..., :-1].squeeze(2) if arr.shape[2] == 2 else arr[..., :3], arr[..., -1]
    return (arr[..., 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr), None


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation tag (same result as ``PIL.ImageOps.exif_transpose``)."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
        8: lambda a: np.rot90(a, 1),
    }
    return np.ascontiguousarray(ops[orientation](arr)) if orientation in ops else arr


def _png_is_16bit_colour(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(26)
    return len(head) == 26 and head[24] == 16 and head[25] in (2, 4, 6)


def _png_chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    if not data.startswith(_PNG_SIGNATURE):
        raise BinsrError("not a PNG file")
    pos = len(_PNG_SIGNATURE)
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4].rjust(4, b"\0"))
        end = pos + 12 + length
        if end > len(data):
            raise BinsrError("truncated PNG file")
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : end - 4]
        if struct.unpack(">I", data[end - 4 : end])[0] != zlib.crc32(kind + body):
            raise BinsrError(f"corrupt PNG chunk {kind.decode('latin-1')!r} (CRC mismatch)")
        yield kind, body
        pos = end


def _decode_png16(data: bytes) -> np.ndarray:
    """Decode a non-interlaced 16-bit PNG to ``HWC`` uint16 (PNG spec section 9: filters)."""
    header, idat = None, []
    for kind, body in _png_chunks(data):
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if header is None:
        raise BinsrError("PNG without IHDR")
    width, height, depth, colour, _, _, interlace = header
    if depth != 16 or colour not in _PNG_CHANNELS or interlace:
        raise BinsrError("unsupported PNG variant (interlaced 16-bit colour)")
    bpp = 2 * _PNG_CHANNELS[colour]
    stride = width * bpp
    raw = zlib.decompress(b"".join(idat))
    if len(raw) < height * (stride + 1):
        raise BinsrError("truncated PNG image data")
    rows = np.frombuffer(raw, np.uint8, count=height * (stride + 1)).reshape(height, stride + 1)
    out = np.empty((height, stride), np.uint8)
    prior = np.zeros(stride, np.uint8)
    for y in range(height):
        ftype, line = rows[y, 0], rows[y, 1:]
        if ftype == 0:
            cur = line
        elif ftype == 1:  # Sub: running sum along the row, per byte position in the pixel
            cur = line.reshape(width, bpp).cumsum(axis=0, dtype=np.uint8).ravel()
        elif ftype == 2:  # Up
            cur = line + prior
        elif ftype in (3, 4):  # Average / Paeth: sequential along the row
            cur = np.frombuffer(_unfilter_sequential(ftype, bytearray(line), prior.tobytes(), bpp), np.uint8)
        else:
            raise BinsrError(f"corrupt PNG: unknown filter type {ftype}")
        out[y] = cur
        prior = out[y]
    samples = out.reshape(-1).view(">u2").astype(np.uint16)
    return samples.reshape(height, width, _PNG_CHANNELS[colour])


def _unfilter_sequential(ftype: int, cur: bytearray, prior: bytes, bpp: int) -> bytearray:
    for i in range(len(cur)):
        a = cur[i - bpp] if i >= bpp else 0
        b = prior[i]
        if ftype == 3:
            pred = (a + b) >> 1
        else:
            c = prior[i - bpp] if i >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
        cur[i] = (cur[i] + pred) & 0xFF
    return cur


#: 8-bit PNGs larger than this are encoded row block by row block here instead of by Pillow,
#: which would first copy the whole image into its own (4 bytes per RGB pixel) buffer
_PNG_STREAM_BYTES = 1 << 25


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _write_png_stream(f, arr: np.ndarray, icc_profile: bytes | None = None, level: int = 6,
                      block_bytes: int = 1 << 21) -> None:
    """Encode ``HW``/``HWC`` uint8/uint16 (1-4 channels) as PNG into the open file ``f``, a block
    of rows at a time (memory: a few blocks, not a copy of the image), zlib ``level``. Filters (PNG
    spec section 9): Paeth on every row for 8 bits, Sub for 16 bits; an ``iCCP`` chunk carries
    ``icc_profile``."""
    img = arr.reshape(arr.shape[0], arr.shape[1], -1)
    height, width, channels = img.shape
    depth = 16 if img.dtype == np.uint16 else 8
    bpp = channels * depth // 8
    stride = width * bpp
    f.write(_PNG_SIGNATURE)
    f.write(_png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, {1: 0, 2: 4, 3: 2, 4: 6}[channels], 0, 0, 0)))
    if icc_profile:
        f.write(_png_chunk(b"iCCP", b"ICC Profile\0\0" + zlib.compress(icc_profile)))
    comp = zlib.compressobj(level)
    pending: list[bytes] = []
    size = 0
    prior = np.zeros((1, stride), np.int16)
    rows = max(1, block_bytes // max(1, stride))
    for r0 in range(0, height, rows):
        block = img[r0 : r0 + rows]
        raw = np.ascontiguousarray(block, dtype=">u2" if depth == 16 else np.uint8).view(np.uint8).reshape(len(block), stride)
        x = raw.astype(np.int16)
        a = np.zeros_like(x)
        a[:, bpp:] = x[:, :-bpp]
        if depth == 16:  # Sub
            ftype, pred = 1, a
        else:  # Paeth, vectorised: the encoder sees the unfiltered bytes
            b = np.concatenate([prior, x[:-1]])
            c = np.zeros_like(x)
            c[:, bpp:] = b[:, :-bpp]
            pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
            pred = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
            ftype = 4
        lines = np.empty((len(block), stride + 1), np.uint8)
        lines[:, 0] = ftype
        lines[:, 1:] = (x - pred).astype(np.uint8)  # modulo 256
        prior = x[-1:]
        out = comp.compress(lines.tobytes())
        if out:
            pending.append(out)
            size += len(out)
        if size >= 1 << 20:
            f.write(_png_chunk(b"IDAT", b"".join(pending)))
            pending, size = [], 0
    pending.append(comp.flush())
    f.write(_png_chunk(b"IDAT", b"".join(pending)))
    f.write(_png_chunk(b"IEND", b""))


def _write_tiff16(f, arr: np.ndarray, icc_profile: bytes | None = None) -> None:
    """Write ``HW``/``HWC`` uint16 (1-4 channels) as a baseline little-endian uncompressed TIFF
    (one strip; TIFF 6.0 sections 2 and 8), alpha as unassociated ExtraSamples, ICC tag 34675."""
    img = arr.reshape(arr.shape[0], arr.shape[1], -1)
    height, width, channels = img.shape
    data = np.ascontiguousarray(img, dtype="<u2")
    extra = [2] * (channels in (2, 4))  # unassociated alpha
    entries: list[tuple[int, int, list[int] | bytes]] = []  # (tag, type, values); 3 SHORT, 4 LONG, 7 UNDEFINED
    n_tags = 10 + len(extra) + bool(icc_profile)
    ifd_size = 2 + 12 * n_tags + 4
    blobs = bytearray()
    base = 8 + ifd_size

    def value(tag: int, kind: int, values: list[int] | bytes) -> None:
        entries.append((tag, kind, values))

    value(256, 4, [width])
    value(257, 4, [height])
    value(258, 3, [16] * channels)
    value(259, 3, [1])
    value(262, 3, [2 if channels >= 3 else 1])
    value(273, 4, [0])  # strip offset, patched below
    value(277, 3, [channels])
    value(278, 4, [height])
    value(279, 4, [data.nbytes])
    value(284, 3, [1])
    if extra:
        value(338, 3, extra)
    if icc_profile:
        value(34675, 7, bytes(icc_profile))
    out = bytearray(b"II*\0" + struct.pack("<I", 8) + struct.pack("<H", len(entries)))
    fields = []
    for tag, kind, values in entries:
        raw = values if isinstance(values, bytes) else struct.pack(f"<{len(values)}{'H' if kind == 3 else 'I'}", *values)
        fields.append((tag, kind, len(values), raw))
    payload_at = base + sum(len(r) + (len(r) & 1) for *_, r in fields if len(r) > 4)
    strip_at = payload_at
    for tag, kind, count, raw in fields:
        if tag == 273:
            raw = struct.pack("<I", strip_at)
        if len(raw) <= 4:
            out += struct.pack("<HHI", tag, kind, count) + raw.ljust(4, b"\0")
        else:
            out += struct.pack("<HHII", tag, kind, count, base + len(blobs))
            blobs += raw + b"\0" * (len(raw) & 1)
    out += struct.pack("<I", 0) + blobs
    f.write(bytes(out))
    f.write(data.tobytes())


def _tiff16_colour(im: Image.Image, path: Path) -> np.ndarray | None:
    """16-bit colour TIFF samples (``HWC`` uint16), which Pillow would reduce to 8 bits, read
    here from the strips of an uncompressed, interleaved file. ``None`` for any other file
    (compressed 16-bit colour TIFFs keep Pillow's 8-bit decoding)."""
    if im.format != "TIFF":
        return None
    bits = im.tag_v2.get(258)
    bits = bits if isinstance(bits, tuple) else (bits,)
    channels = int(im.tag_v2.get(277, 1))
    if channels < 2 or any(b != 16 for b in bits):
        return None
    if int(im.tag_v2.get(259, 1)) != 1 or int(im.tag_v2.get(284, 1)) != 1:
        return None  # compressed or planar: Pillow's decoder (8 bits)
    width, height = im.size
    offsets, counts = im.tag_v2.get(273), im.tag_v2.get(279)
    offsets = offsets if isinstance(offsets, tuple) else (offsets,)
    counts = counts if isinstance(counts, tuple) else (counts,)
    raw = bytearray()
    with open(path, "rb") as f:
        order = "<" if f.read(2) == b"II" else ">"
        for off, n in zip(offsets, counts):
            f.seek(off)
            raw += f.read(n)
    need = width * height * channels * 2
    if len(raw) < need:
        raise BinsrError("truncated TIFF image data")
    return np.frombuffer(bytes(raw[:need]), f"{order}u2").astype(np.uint16).reshape(height, width, channels)


def write_image(path: str | os.PathLike, arr: np.ndarray, overwrite: bool = False,
                icc_profile: bytes | None = None, png_level: int = 6) -> Path:
    """Write ``HW``/``HWC`` (1-4 channels: gray, gray+alpha, RGB, RGBA) ``uint8``/``uint16``.

    The format follows the extension (:data:`IMAGE_EXTENSIONS`); ``uint16`` needs ``.png`` or
    ``.tif`` (not gray + alpha; 16-bit colour TIFF is written uncompressed). ``icc_profile`` (bytes) is embedded (PNG ``iCCP``, JPEG, WebP,
    TIFF; BMP has none). 16-bit and large 8-bit PNGs are encoded in row blocks without a copy of
    the image. ``png_level``: zlib level of a PNG, 0-9 (lossless at every level; 6, Pillow's and
    zlib's default; 1 is about 3x faster and 13% larger, OpenCV's default).
    JPEG is written at quality 95 without chroma subsampling, WebP losslessly (WebP has no gray
    mode: gray is stored as R = G = B and reads back as RGB). The file is
    written to a temporary name in the same folder and renamed into place, so readers never
    see a partial file (:func:`binsr.files.atomic_write`). Parent folders are created. An existing
    file is replaced only with ``overwrite=True``; otherwise :class:`~binsr.errors.UsageError`.
    """
    path = Path(path)
    fmt = IMAGE_EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise UsageError(f"cannot write {path}: unknown image extension (use one of {', '.join(IMAGE_EXTENSIONS)})")
    arr = np.asarray(arr)
    channels = 1 if arr.ndim == 2 else (arr.shape[2] if arr.ndim == 3 else 0)
    if arr.dtype not in (np.uint8, np.uint16) or channels not in (1, 2, 3, 4):
        raise ValueError(f"write_image: expected uint8/uint16 HW or HWC (1-4 channels), got {arr.dtype} {arr.shape}")
    if arr.dtype == np.uint16 and not (fmt == "PNG" or (fmt == "TIFF" and channels != 2)):
        raise UsageError(f"cannot write {path}: 16-bit images are written as .png only (or .tif, but not gray+alpha)")
    if fmt == "JPEG" and channels in (2, 4):
        raise UsageError(f"cannot write {path}: JPEG has no alpha channel")
    if not 0 <= png_level <= 9:
        raise UsageError(f"PNG compression level must be 0-9, got {png_level}")
    claim_output(path, overwrite)

    def write(tmp: Path) -> None:
        with open(tmp, "xb") as f:
            if fmt == "PNG" and (arr.dtype == np.uint16 or arr.nbytes > _PNG_STREAM_BYTES):
                _write_png_stream(f, arr, icc_profile, png_level)
            elif fmt == "TIFF" and arr.dtype == np.uint16 and channels > 1:
                _write_tiff16(f, arr, icc_profile)
            else:
                img = Image.fromarray(arr[..., 0] if channels == 1 and arr.ndim == 3 else arr)
                options = {"JPEG": {"quality": 95, "subsampling": 0}, "WEBP": {"lossless": True},
                           "PNG": {"compress_level": png_level}}
                extra = {"icc_profile": icc_profile} if icc_profile and fmt != "BMP" else {}
                img.save(f, format=fmt, **options.get(fmt, {}), **extra)

    atomic_write(path, write)
    return path
