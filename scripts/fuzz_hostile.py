"""Fuzz binsr's readers of untrusted files for a time budget: each mutated file must be read (and
run) or refused with one BinsrError line; anything else is a finding, saved for a test.

Targets (``--target``, default all, each for ``--seconds``):
- ``packed``: ``.bsr`` files of three tiny models that use every op (SRResNet SCALES, SwinIR
  SCALES, SRBNAS): one to three graph fields, tensor shapes or graph keys changed, or bytes of
  the header and data changed, truncated or given a wrong header length; loaded and run on a
  9x7 input (the output must be finite and ``scale`` times the input).
- ``images``: PNG 8/16-bit, JPEG, BMP, WebP, GIF and LZW / JPEG TIFFs with bytes changed,
  inserted or cut; read by :func:`binsr.data.io.read_image_info`; nothing may reach file
  descriptor 2 or escape as a Python warning.
- ``weights``: safetensors weights files of three tiny models, bytes of header and data changed
  or cut; loaded by :func:`binsr.models.from_weights` and run.

Stop 36 found with it: a bconv with ``res: null`` (TypeError), a graph without ``scale``
(KeyError), a GIF whose trailer became an extension (IndexError), a TIFF with an unknown
predictor (KeyError), libtiff and Pillow lines on the console, a tensor name with a newline in a
message. Run on one core beside training::

    OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python scripts/fuzz_hostile.py --seconds 120 --save /tmp/fuzz
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np

from binsr.errors import BinsrError, finite_output

LR = np.random.default_rng(0).random((1, 3, 9, 7), dtype=np.float32)
#: values a graph field is set to: wrong types, small and huge numbers, beyond float32
VALUES = [None, "nope", True, False, [], 0, 1, 2, 3, 4, 7, 8, 12, 16, 17, 64, -1, 1.5, 10**9, 2**31, 2**63 - 1,
          1e300, float("nan")]
JSON_BYTES = b'0123456789-.,:{}[]"eE \\'


def _tiny_models() -> dict:
    """{name: model} of three small models whose packed files use every op of the format."""
    import torch

    from binsr.models import create

    torch.manual_seed(0)
    genotype = {"format": "binsr.srbnas.genotype/1", "groups": 2,
                "nodes": [[["conv_3x3", 0], ["skip_connect", 1]], [["skip_connect", 0], ["skip_connect", 2]],
                          [["dil_conv_3x3", 3], ["skip_connect", 1]]]}
    models = {"srresnet_scales": create("srresnet_small", 4, "scales", num_block=1, num_feat=16),
              "swinir_scales": create("swinir_light", 4, "scales", embed_dim=12, depths=(1,), num_heads=(2,),
                                      window_size=4),
              "srbnas": create("srbnas", 4, "irnet", genotype=genotype, num_cells=2, num_feat=16)}
    with torch.no_grad():
        for model in models.values():
            for name, p in model.named_parameters():
                if "threshold" in name or name.endswith("bias"):
                    p.normal_(0, 0.05)
    return {k: m.eval() for k, m in models.items()}


def _mutate_bytes(rng: random.Random, blob: bytes, header: bool) -> bytes:
    """``blob`` (a safetensors file) with header bytes, data bytes, its length or its end changed."""
    b = bytearray(blob)
    hlen = int.from_bytes(b[:8], "little")
    r = rng.random()
    if r < 0.5 and header:
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(8, 8 + hlen)] = rng.choice(JSON_BYTES + bytes([rng.randrange(256)]))
    elif r < 0.8:
        for _ in range(rng.randint(1, 16)):
            b[rng.randrange(8 + hlen, len(b))] = rng.randrange(256)
    elif r < 0.9:
        b = b[: rng.randrange(len(b))]
    else:
        b[:8] = (rng.randrange(2**64) if rng.random() < 0.5 else max(0, hlen + rng.randint(-5, 5))).to_bytes(8, "little")
    return bytes(b)


def _packed_case(rng: random.Random, files: dict, tmp: Path) -> tuple[Path, str]:
    from safetensors.numpy import save_file

    from binsr.deploy.graph import FIELDS

    name = rng.choice(list(files))
    blob, tensors, graph = files[name]
    path = tmp / "case.bsr"
    if rng.random() < 0.4:
        path.write_bytes(_mutate_bytes(rng, blob, header=True))
        return path, f"{name}: bytes"
    tensors, graph, done = dict(tensors), json.loads(json.dumps(graph)), []
    ops = graph["ops"]
    for _ in range(rng.randint(1, 3)):
        r = rng.random()
        if r < 0.6:
            i = rng.randrange(len(ops))
            field = rng.choice(list(FIELDS[ops[i]["op"]]))
            names = [op.get("dst") for op in ops if op.get("dst")] + list(tensors)
            value = rng.choice(names) if rng.random() < 0.2 else rng.choice(VALUES)
            ops[i][field] = value
            done.append(f"op {i} {ops[i]['op']}.{field}={value!r}")
        elif r < 0.85:
            key = rng.choice(list(tensors))
            shape = list(tensors[key].shape) or [1]
            j = rng.randrange(len(shape))
            shape[j] = max(0, shape[j] + rng.choice([-1, 1, 2, -shape[j]]))
            tensors[key] = np.zeros(shape, tensors[key].dtype)
            done.append(f"tensor {key} -> {shape}")
        else:
            key = rng.choice([k for k in graph if k != "ops"])
            graph[key] = rng.choice(VALUES)
            done.append(f"graph {key}={graph[key]!r}")
    try:
        save_file(tensors, str(path), metadata={"binsr": json.dumps(graph)})
    except (ValueError, TypeError):
        path.write_bytes(blob)
    return path, f"{name}: {'; '.join(done)}"


def fuzz_packed(rng: random.Random, tmp: Path) -> tuple[Callable, Callable]:
    from safetensors import safe_open

    from binsr.deploy import Runtime, export_packed

    files = {}
    for name, model in _tiny_models().items():
        export_packed(model, tmp / f"{name}.bsr")
        with safe_open(str(tmp / f"{name}.bsr"), framework="numpy") as f:
            files[name] = ((tmp / f"{name}.bsr").read_bytes(), {k: f.get_tensor(k) for k in f.keys()},
                           json.loads(f.metadata()["binsr"]))

    def run(path: Path) -> None:
        rt = Runtime(path)
        y = rt(LR)
        if y.shape != (1, 3, 9 * rt.scale, 7 * rt.scale) or not np.isfinite(y).all():
            raise AssertionError(f"output of shape {y.shape}, finite: {np.isfinite(y).all()}")

    return (lambda: _packed_case(rng, files, tmp)), run


def fuzz_images(rng: random.Random, tmp: Path) -> tuple[Callable, Callable]:
    from PIL import Image

    from binsr.data.io import read_image_info

    rgb = (np.random.default_rng(0).random((24, 20, 3)) * 255).astype(np.uint8)
    seeds = {}
    for fmt, kw in (("png", {}), ("jpg", {"quality": 90}), ("bmp", {}), ("webp", {}), ("gif", {}),
                    ("tif", {"compression": "tiff_lzw"}), ("tif", {"compression": "jpeg"})):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, Image.registered_extensions()[f".{fmt}"], **kw)
        seeds[f"{fmt} {kw}"] = (fmt, buf.getvalue())
    buf = io.BytesIO()
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(buf, "PNG")
    seeds["png 16-bit"] = ("png", buf.getvalue())
    sink = tempfile.TemporaryFile()

    def case() -> tuple[Path, str]:
        key = rng.choice(list(seeds))
        fmt, b = seeds[key]
        b = bytearray(b)
        for _ in range(rng.randint(1, 6)):
            r = rng.random()
            if r < 0.7:
                b[rng.randrange(len(b))] = rng.randrange(256)
            elif r < 0.85 and len(b) > 2:
                b = b[: rng.randrange(1, len(b))]
            else:
                at = rng.randrange(len(b))
                b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        path = tmp / f"case.{fmt}"
        path.write_bytes(bytes(b))
        return path, key

    def run(path: Path) -> None:
        sink.seek(0)
        sink.truncate()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    read_image_info(path, max_pixels=50_000_000)
                except BinsrError:
                    pass
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        printed = sink.read(300)
        if printed or caught:
            raise AssertionError(f"printed {printed!r}, warned {[str(w.message) for w in caught]}")

    return case, run


def fuzz_weights(rng: random.Random, tmp: Path) -> tuple[Callable, Callable]:
    import torch

    from binsr.models import from_weights
    from binsr.train.checkpoint import save_weights

    blobs = {}
    for name, model in _tiny_models().items():
        save_weights(tmp / f"{name}.safetensors", model)
        blobs[name] = (tmp / f"{name}.safetensors").read_bytes()

    def case() -> tuple[Path, str]:
        name = rng.choice(list(blobs))
        path = tmp / "case.safetensors"
        path.write_bytes(_mutate_bytes(rng, blobs[name], header=True))
        return path, name

    def run(path: Path) -> None:  # as binsr upscale's PyTorch backend: a NaN or inf output is refused
        with torch.no_grad():
            finite_output(from_weights(path)(torch.from_numpy(LR)).numpy(), str(path))

    return case, run


TARGETS = {"packed": fuzz_packed, "images": fuzz_images, "weights": fuzz_weights}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", choices=[*TARGETS, "all"], default="all")
    ap.add_argument("--seconds", type=float, default=60.0, help="time per target (default 60)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", type=Path, help="copy each finding's file here")
    args = ap.parse_args()
    warnings.simplefilter("ignore", RuntimeWarning)  # overflow inside a refused model's run
    findings = 0
    for target in TARGETS if args.target == "all" else [args.target]:
        rng = random.Random(args.seed)
        with tempfile.TemporaryDirectory(prefix=f"binsr-fuzz-{target}-") as tmp:
            case, run = TARGETS[target](rng, Path(tmp))
            kinds: Counter[str] = Counter()
            n, end = 0, time.time() + args.seconds
            while time.time() < end:
                path, what = case()
                n += 1
                try:
                    run(path)
                    continue
                except BinsrError as exc:
                    if "\n" not in str(exc):
                        continue
                    problem = f"multi-line BinsrError: {str(exc)[:120]!r}"
                except Exception as exc:  # noqa: BLE001 (a finding, whatever it is)
                    problem = f"{type(exc).__name__}: {str(exc)[:120]}"
                kinds[problem] += 1
                if args.save:
                    args.save.mkdir(parents=True, exist_ok=True)
                    keep = args.save / f"{target}-{n}{path.suffix}"
                    keep.write_bytes(path.read_bytes())
                    print(f"{target}: {problem} ({what}) -> {keep}", file=sys.stderr)
            findings += sum(kinds.values())
            print(f"{target}: {n} cases, {sum(kinds.values())} findings")
            for problem, count in kinds.most_common(10):
                print(f"  {count} x {problem}")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
