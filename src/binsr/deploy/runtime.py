"""Torch-free inference of a packed file (:func:`binsr.deploy.export_packed`): NumPy for the FP
parts, the compiled bit-packed kernels for the binary convs."""

from __future__ import annotations

import copy
import json
import os
import time
from collections import defaultdict
from typing import Any, NamedTuple

import numpy as np
from safetensors import SafetensorError, safe_open

from binsr.deploy import fp, transformer
from binsr.deploy.bitpack import concat_bits, pack_bits, words
from binsr.deploy.engine import BinaryConv, _engine, aligned_empty, resolve_path
from binsr.deploy.graph import check_graph
from binsr.errors import BinsrError, finite_output

__all__ = ["Runtime", "DEFAULTS", "FORMAT", "VERSION"]

#: the packed file format written by :func:`binsr.deploy.export_packed`; v2 (stop 14): a bconv's
#: block LeakyReLU is the scalar ``leaky``, not three constant vectors, and default fields are left out
FORMAT, VERSION = "binsr.packed", 2
#: op fields the exporter leaves out when they hold these values
DEFAULTS: dict[str, Any] = {"pad": 0, "dil": 1, "groups": 1, "shuffle": 1, "act_first": False, "div": 1.0,
                            "post_scale": 1.0, "post_after": 0, "fp64": False}


#: the shortest run of bconvs executed depth first. Zen 4, 1 / 2 threads, 320x180: the 32 convs of
#: zoo srresnet_lite16_e2fif_x4 1.2x / 1.15x faster so; zoo srbnas_x4's runs of 6 and 7 grouped
#: convs 1.02x / 0.97x (their per-row calls cost what the caches save), so they run conv by conv
MIN_CHAIN = 8
#: the widest float row (bytes) a chain takes: a sweep touches a few rows of every conv, which
#: must stay in the caches. Zen 4, 1 thread, zoo lite16 x4 at 180 rows: 1.19x at 320 px (80 KiB),
#: 1.11x at 480, 0.99x at 640, 0.97x at 1000 px; wider maps (a whole large image, --tile 0) run
#: conv by conv (binsr upscale's default 256-px tiles are 288 px wide)
CHAIN_ROW_BYTES = 128 << 10


class _Op(dict):
    """An op of the graph; a field the exporter left out reads as its default (None if none)."""

    def __missing__(self, key: str) -> Any:
        return DEFAULTS.get(key)


class _BConv(NamedTuple):
    """A bconv prepared at load: the compiled conv, its per-channel scale (``2**shift`` for a
    power-of-two one; a channel gate multiplies it per call) and its epilogue activation
    (shift, slope, bias)."""

    conv: BinaryConv
    scale: np.ndarray | None
    act: tuple[np.ndarray, np.ndarray, np.ndarray] | None


def _widen(t: np.ndarray) -> np.ndarray:
    return t.astype(np.float32) if t.dtype == np.float16 else t


class _Arena:
    """The convs' output maps, reused once dead: a fresh map costs its page faults and the kernel's
    zeroing on the first write (as much as a binary conv itself, 2 ms at 320x180x64; 50 ms for a
    1280x720x64 FP map, which glibc always maps afresh).
    Maps of one call serve the next call of the same shapes; other shapes are dropped at its end.
    A dead map is reused only when no live tensor is a view of it."""

    def __init__(self) -> None:
        self._free: dict[tuple, list[np.ndarray]] = defaultdict(list)
        self._owned: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # id(map) -> (map, its buffer)
        self._used: set[tuple] = set()
        self._recycle = True

    def begin(self, recycle: bool) -> None:
        self._recycle, self._used = recycle, set()

    def take(self, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        key = (shape, np.dtype(dtype).str)
        self._used.add(key)
        return self._free[key].pop() if self._free[key] else aligned_empty(shape, dtype)

    def own(self, buf: np.ndarray, view: np.ndarray | None = None) -> np.ndarray:
        """The map the graph holds (``view`` of a taken buffer, or the buffer itself), registered
        so that its buffer returns to the arena when the map dies."""
        v = buf if view is None else view
        self._owned[id(v)] = (v, buf)  # v kept: its id names this buffer until released
        return v

    def release(self, value: np.ndarray | None, live) -> None:
        _, buf = self._owned.pop(id(value), (None, None))
        if buf is None or not self._recycle or any(np.may_share_memory(buf, v) for v in live):
            return
        self._free[(buf.shape, buf.dtype.str)].append(buf)

    def end(self) -> None:
        self._owned.clear()
        self._free = defaultdict(list, {k: v for k, v in self._free.items() if k in self._used})


class Runtime:
    """Load a packed model and run it on LR images.

    Args:
        path: the ``.bsr`` file.
        threads: threads for the binary kernels and for the row tiles of the FP parts.
        path_isa: kernel path (``"auto"``, ``"avx512"``, ``"avx2"``, ``"portable"``, ``"numpy"``).

    A Runtime keeps its activation maps between calls (see ``_Arena``): run one call at a time on
    it, and give each Python thread its own Runtime.
    """

    def __init__(self, path: str | os.PathLike, threads: int = 1, path_isa: str = "auto") -> None:
        try:
            with safe_open(os.fspath(path), framework="numpy") as f:
                meta = f.metadata() or {}
                # float16 FP weights (export_packed(fp16=True)) are computed with in float32
                self.tensors = {k: _widen(f.get_tensor(k)) for k in f.keys()}
        except (OSError, ValueError, SafetensorError) as exc:
            raise BinsrError(f"cannot read packed model {path}: {exc}") from exc
        if "binsr" not in meta:
            raise BinsrError(f"{path} is not a binsr packed model (no graph in its metadata)")
        try:
            self.graph: dict[str, Any] = json.loads(meta["binsr"])
        except json.JSONDecodeError as exc:
            raise BinsrError(f"{path} has a corrupt graph in its metadata: {exc}") from None
        if not isinstance(self.graph, dict):
            raise BinsrError(f"{path} is not a binsr packed model (its graph is not a JSON object)")
        if self.graph.get("format") != FORMAT:
            raise BinsrError(f"{path} is not a binsr packed model (format {self.graph.get('format')!r})")
        if self.graph.get("version") != VERSION:
            raise BinsrError(f"{path} is packed format v{self.graph.get('version')}, this binsr reads "
                             f"v{VERSION}: export it again from its weights (binsr export)")
        #: the smallest input side every map of the graph has a pixel for (1 for same-size convs)
        notes: dict[int, Any] = {}
        self.min_side = check_graph(self.graph, self.tensors, DEFAULTS, path, notes)
        self.file = os.fspath(path)
        self.graph["ops"] = [_Op(op) for op in self.graph["ops"]]
        self.threads = threads
        self.path = resolve_path(path_isa)
        self.scale = int(self.graph["scale"])
        self._prepared = [notes[i] if op["op"] == "concat" else self._prepare(op)
                          for i, op in enumerate(self.graph["ops"])]
        self._free = self._last_uses()
        self._chains = self._find_chains()
        self._fusions = self._find_token_fusions()
        self._arena = _Arena()
        #: seconds per op kind of the last call when ``profile=True``
        self.timings: dict[str, float] = {}

    def lane(self) -> Runtime:
        """A one-thread Runtime of the same model for another Python thread: it shares this one's
        tensors, prepared layers and depth-first chains (only read while running; the kernels'
        scratch is per thread) and has its own activation memory. ``binsr.infer`` runs tiles on
        such lanes side by side rather than one call's convs on several threads."""
        twin = copy.copy(self)
        twin.threads, twin._arena, twin.timings = 1, _Arena(), {}
        return twin

    def _last_uses(self) -> list[list[str]]:
        """Per op, the activations no later op reads: freed after it, so that memory holds only the
        live tensors (a long residual body would otherwise keep every block's output)."""
        ops = self.graph["ops"]
        made = {self.graph["input"]} | {op[k] for op in ops for k in ("dst", "dst_bits") if op.get(k)}
        last: dict[str, int] = {}
        for i, op in enumerate(ops):
            for key, value in op.items():
                if key in ("dst", "dst_bits"):
                    continue
                for name in value if isinstance(value, list) else [value]:
                    if isinstance(name, str) and name in made:
                        last[name] = i
        free: list[list[str]] = [[] for _ in ops]
        for name, i in last.items():
            if name != self.graph["output"]:
                free[i].append(name)
        return free

    def _find_chains(self, min_length: int = MIN_CHAIN) -> dict[int, tuple[int, frozenset[str]]]:
        """Runs of ``min_length`` or more consecutive same-size bconvs that read each other's outputs
        only as input bits and residuals, which the engine runs depth first (``chain.cpp``): first
        op -> (the op after the run, the run's outputs that later ops or the graph output read)."""
        if self.path == "numpy" or _engine is None:
            return {}
        ops, chains, i = self.graph["ops"], {}, 0
        while i < len(ops):
            j, made = i, set()
            while (j < len(ops) and ops[j]["op"] == "bconv" and 2 * ops[j]["pad"] == ops[j]["dil"] * (ops[j]["k"] - 1)
                   and ops[j]["pix"] not in made and ops[j]["chan"] not in made):
                made |= {ops[j]["dst"], ops[j]["dst_bits"]} - {None}
                j += 1
            if j - i >= max(2, min_length):
                read_later = {n for op in ops[j:] for v in op.values() for n in (v if isinstance(v, list) else [v])
                              if isinstance(n, str)}
                chains[i] = (j, frozenset(made & (read_later | {self.graph["output"]})))
            i = max(j, i + 1)
        return chains

    def _find_token_fusions(self) -> dict[int, tuple[int, str | None]]:
        """Where a SCALES binary linear's input is read only by its sign packing and its token gate's
        float64 linear (``pack``, ``linear`` with one output), after a LayerNorm or GELU that no other
        op reads, or after any op: first op -> (the op after them, the LayerNorm / GELU or None). The
        engine runs them in one pass over the tokens (``_engine.pack_gate``: the same functions on
        the same values, so the same bits) without writing the LayerNorm's or GELU's map."""
        if self.path == "numpy" or _engine is None:
            return {}
        ops, found, covered = self.graph["ops"], {}, 0
        for i, op in enumerate(ops):
            if i < covered:  # a pack inside the fusion before: never started on its own
                continue
            pre = op["op"] in ("layernorm", "gelu")
            j = i + 1 if pre else i
            if j + 1 >= len(ops):
                continue
            pack, lin = ops[j], ops[j + 1]
            src = op["dst"] if pre else pack["src"]
            if (pack["op"] == "pack" and lin["op"] == "linear" and pack["src"] == lin["src"] == src and lin["fp64"]
                    and self.tensors[lin["w"]].shape[1] == 1
                    and (not pre or (src in self._free[j + 1] and src != self.graph["output"]))):
                found[i] = (j + 2, op["op"] if pre else None)
                covered = j + 2
        return found

    def _run_token_fusion(self, start: int, env: dict[str, np.ndarray]) -> str:
        """The fusion at ``start`` (see :meth:`_find_token_fusions`); its profile name."""
        end, pre = self._fusions[start]
        op, pack, lin = self.graph["ops"][start], self.graph["ops"][end - 2], self.graph["ops"][end - 1]
        norm = pre == "layernorm"
        env[pack["dst"]], env[lin["dst"]] = _engine.pack_gate(
            env[op["src"]], self._t(pack["thr"]), self.tensors[lin["w"]], self.tensors[lin["b"]], self.threads,
            {None: 0, "layernorm": 1, "gelu": 2}[pre], self._t(op["w"]) if norm else None,
            self._t(op["b"]) if norm else None, op["eps"] if norm else 0.0, bool(pre and op["fp64"]))
        return f"{pre or ''}+pack+gate".lstrip("+")

    def _t(self, name: str | None) -> np.ndarray | None:
        return None if name is None else self.tensors[name]

    def _wino(self, op: dict[str, Any]) -> np.ndarray | None:
        """Winograd weights of a 3x3, padding-1 FP conv with at least 8 input and 16 output channels,
        else None (with fewer outputs, e.g. the tail's 64 -> 3 conv, the input transform costs
        more than the direct dot products: ``fp.conv3x3_direct``)."""
        if op["op"] != "conv" or op["pad"] != 1 or op["dil"] != 1 or op["fp64"]:
            return None
        w = self.tensors[op["w"]]
        c = w.shape[0] // 9
        return fp.winograd_weights(w, c) if w.shape[0] == 9 * c and c >= 8 and w.shape[1] >= 16 else None

    def _prepare(self, op: dict[str, Any]) -> Any:
        """What an op computes once at load: a compiled binary conv with its scale and activation,
        Winograd weights, or the dense key-major (heads, N, N) relative position bias of a window
        attention (a concat's prepared value is the channel counts of its bit maps, from the check)."""
        if op["op"] == "bconv":
            conv = BinaryConv(self.tensors[op["w"]], op["cin"], op["k"], op["dil"], op["pad"], op["groups"])
            scale = self._t(op["scale"])
            if op["shift"] is not None:
                scale = np.ldexp(np.float32(1), self.tensors[op["shift"]]).astype(np.float32)
            act = None if op["act"] is None else tuple(self.tensors[n] for n in op["act"])
            if op["leaky"] is not None:  # the block's LeakyReLU/ReLU: RPReLU with zero shifts
                zero = np.zeros(conv.cout, np.float32)
                act = (zero, np.full(conv.cout, op["leaky"], np.float32), zero)
            return _BConv(conv, scale, act)
        if op["op"] == "window_attention":
            index = transformer.relative_position_index(op["window"])
            return np.ascontiguousarray(self.tensors[op["table"]][index].transpose(2, 1, 0))
        return self._wino(op)

    def __call__(self, lr: np.ndarray, profile: bool = False) -> np.ndarray:
        """Upscale float32 NCHW RGB in [0, 1] (N, 3, h, w) to (N, 3, s*h, s*w)."""
        lr = np.asarray(lr, dtype=np.float32)
        if lr.ndim != 4:
            raise BinsrError(f"expected an (N, C, h, w) array, got shape {lr.shape}")
        fp.set_blas_threads(1)  # FP parts are threaded by row tiles, see fp._run_parallel
        self.timings = defaultdict(float)
        out = [self.run_hwc(np.ascontiguousarray(img.transpose(1, 2, 0)), profile) for img in lr]
        return np.stack([o.transpose(2, 0, 1) for o in out])

    def run_hwc(self, x: np.ndarray, profile: bool = False, keep: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """One HWC float32 image through the graph; ``keep``: a dict that receives every
        intermediate tensor by its graph name (for debugging and the exactness tests)."""
        if min(x.shape[:2]) < self.min_side:
            raise BinsrError(f"an input of {x.shape[0]}x{x.shape[1]} pixels is smaller than this model's "
                             f"{self.min_side}x{self.min_side} minimum")
        env: dict[str, np.ndarray] = {self.graph["input"]: x}
        self._arena.begin(recycle=keep is None)
        ops, skip_to = self.graph["ops"], 0
        sums: dict[str, np.ndarray] = {}  # a map's channel sums, from its spatial gate for its channel gate
        try:
            for i, (op, prep, dead) in enumerate(zip(ops, self._prepared, self._free)):
                t0 = time.perf_counter() if profile else 0.0
                kind = op["op"]
                if i < skip_to:
                    pass  # run by the chain before it
                elif i in self._chains and keep is None and self._run_chain(i, env):
                    skip_to = self._chains[i][0]
                elif i in self._fusions and keep is None:
                    kind = self._run_token_fusion(i, env)
                    skip_to = self._fusions[i][0]
                elif kind == "bconv":
                    self._run_bconv(op, prep, env)
                elif kind == "conv":
                    self._run_conv(op, prep, env)
                    kind = "upsample_conv" if op["shuffle"] > 1 else "fp_conv"
                elif kind == "pack":
                    env[op["dst"]] = self._pack(env[op["src"]], self._t(op["thr"]))
                elif kind == "sigmoid":
                    env[op["dst"]] = fp.sigmoid(env[op["src"]][..., 0], op["fp64"])
                elif kind == "spatial_gate":
                    src = env[op["src"]]
                    out = self._arena.take(fp.conv_output_shape(src.shape, self.tensors[op["w"]].shape, op["pad"],
                                                                op["dil"], 1)[:2], np.float32)
                    after = ops[i + 1] if i + 1 < len(ops) else {}
                    if after.get("op") == "channel_gate" and after["src"] == op["src"]:  # SCALES: both gates of a map
                        sums[op["src"]] = np.empty(src.shape[-1])
                    env[op["dst"]] = self._arena.own(fp.spatial_gate(src, self.tensors[op["w"]], self._t(op["b"]),
                                                                     op["pad"], op["dil"], self.threads, out,
                                                                     self.path != "numpy", self.path,
                                                                     sums.get(op["src"])))
                elif kind == "channel_gate":
                    env[op["dst"]] = fp.channel_gate(env[op["src"]], self.tensors[op["w"]], op["out_channels"],
                                                     self.path != "numpy", self.threads, sums.pop(op["src"], None))
                elif kind == "bilinear_add":
                    env[op["dst"]] = fp.bilinear_add(env[op["src"]], env[op["add"]], op["scale"], self.threads)
                elif kind == "linear":
                    env[op["dst"]] = fp.linear(env[op["src"]], self.tensors[op["w"]], self.tensors[op["b"]],
                                               op["fp64"], self.threads, self.path != "numpy")
                elif kind == "layernorm":
                    env[op["dst"]] = transformer.layer_norm(env[op["src"]], self.tensors[op["w"]],
                                                            self.tensors[op["b"]], op["eps"], self.threads,
                                                            self.path != "numpy", op["fp64"])
                elif kind == "gelu":
                    env[op["dst"]] = transformer.gelu(env[op["src"]], self.threads, self.path != "numpy", op["fp64"])
                elif kind == "window_attention":
                    env[op["dst"]] = transformer.window_attention(env[op["src"]], op["heads"], op["window"],
                                                                  op["shift"], prep, op["scale"], self.threads,
                                                                  self.path != "numpy", op["fp64"])
                elif kind == "pad_window":
                    env[op["dst"]] = transformer.pad_to_multiple(env[op["src"]], op["multiple"])
                elif kind == "affine":
                    env[op["dst"]] = transformer.affine(env[op["src"]], self.tensors[op["mul"]],
                                                        self.tensors[op["add"]])
                elif kind == "concat":
                    srcs = [env[n] for n in op["srcs"]]
                    out = self._arena.take(srcs[0].shape[:-1] + (words(sum(prep)),), np.uint64)
                    env[op["dst"]] = self._arena.own(concat_bits(srcs, prep, out=out))
                elif kind == "add":
                    src = env[op["src"]]
                    out = self._arena.take(src.shape, np.float32)
                    env[op["dst"]] = self._arena.own(np.add(src, env[op["add"]], out=out))
                elif kind == "crop":
                    h, w = env[op["like"]].shape[:2]
                    env[op["dst"]] = np.ascontiguousarray(env[op["src"]][: h * op["scale"], : w * op["scale"]])
                else:
                    raise BinsrError(f"unknown op {kind!r} in the packed graph")
                for name in dead:
                    value = env.pop(name, None)
                    if keep is not None and value is not None:
                        keep[name] = value
                    self._arena.release(value, env.values())
                if profile:
                    self.timings[kind] += time.perf_counter() - t0
        finally:
            self._arena.end()
        return finite_output(env[self.graph["output"]], self.file)

    def _run_conv(self, op: dict[str, Any], wino: np.ndarray | None, env: dict[str, np.ndarray]) -> None:
        """An FP conv (Winograd where prepared, direct loops for a 3x3 on few channels or in float64,
        else im2col + sgemm) into an arena buffer."""
        src = env[op["src"]]
        w = self.tensors[op["w"]]
        out = self._arena.take(fp.conv_output_shape(src.shape, w.shape, op["pad"], op["dil"], op["shuffle"]),
                               np.float32)
        if wino is not None:
            fp.conv3x3_winograd(src, wino, self._t(op["b"]), op["leaky"], op["shuffle"], self.threads, out=out)
        elif w.shape[0] == 9 * src.shape[2] and op["pad"] == 1 and op["dil"] == 1 and op["shuffle"] == 1:
            fp.conv3x3_direct(src, w, self._t(op["b"]), op["leaky"], self.threads, out=out, fp64=op["fp64"])
        else:
            fp.conv2d(src, w, self._t(op["b"]), op["pad"], op["dil"], op["leaky"], op["shuffle"], self.threads, out=out,
                      fp64=op["fp64"])
        env[op["dst"]] = self._arena.own(out)

    def _pack(self, x: np.ndarray, thr: np.ndarray | None) -> np.ndarray:
        """Sign bits of ``x >= thr`` (``x - thr >= 0``: the same for finite floats), packed."""
        if self.path == "numpy" or _engine is None:
            return pack_bits(x if thr is None else x - thr)
        return _engine.pack_signs(x, thr, self.threads)

    def _run_chain(self, start: int, env: dict[str, np.ndarray]) -> bool:
        """The bconvs of the chain at ``start`` depth first; False (nothing run) where the engine
        cannot (a kernel that pads itself, or grouped dots that need a correction)."""
        end, outside = self._chains[start]
        ops = self.graph["ops"]
        read = {n for op in ops[start:end] for n in (op["src"], *(op["res"] or []))}
        h, w = env[ops[start]["src"]].shape[:2]
        if w * max(prep.conv.cout for prep in self._prepared[start:end]) * 4 > CHAIN_ROW_BYTES:
            return False
        made_bits: dict[str, int] = {}
        made_out: dict[str, int] = {}
        steps, keep = [], {}
        for k, (op, prep) in enumerate(zip(ops[start:end], self._prepared[start:end])):
            cout = prep.conv.cout
            shift, slope, abias = prep.act if prep.act is not None else (None, None, None)
            src = made_bits.get(op["src"], -1)
            step = dict(layer=prep.conv._layer, src=src, x=env[op["src"]] if src < 0 else None,
                        scale=prep.scale, bias=self._t(op["bias"]), gate_bias=self._t(op["gate_bias"]),
                        pix=None if op["pix"] is None else env[op["pix"]],
                        chan=None if op["chan"] is None else env[op["chan"]], act_shift=shift, act_slope=slope,
                        act_bias=abias, act_first=op["act_first"], thr=self._t(op["thr"]), div=float(op["div"]),
                        post_scale=float(op["post_scale"]), post_after=int(op["post_after"]),
                        res=[None if r in made_out else env[r] for r in op["res"] or []],
                        res_src=[made_out.get(r, -1) for r in op["res"] or []],
                        out=None, bits_out=None, ring_out=False, ring_bits=False)
            for name, key, shape, dtype in ((op["dst"], "out", (h, w, cout), np.float32),
                                            (op["dst_bits"], "bits_out", (h, w, words(cout)), np.uint64)):
                if name in outside:
                    step[key] = keep[name] = self._arena.take(shape, dtype)
                elif name in read:
                    step["ring_bits" if key == "bits_out" else "ring_out"] = True
            if op["dst_bits"] is not None:
                made_bits[op["dst_bits"]] = k
            if op["dst"] is not None:
                made_out[op["dst"]] = k
            steps.append(step)
        if not _engine.run_chain(steps, h, w, self.path, self.threads):
            for buf in keep.values():
                self._arena.release(self._arena.own(buf), env.values())
            return False
        for name, buf in keep.items():
            env[name] = self._arena.own(buf)
        return True

    def _run_bconv(self, op: dict[str, Any], prep: _BConv, env: dict[str, np.ndarray]) -> None:
        conv = prep.conv
        shape = (1,) + conv.output_size(env[op["src"]].shape[:2])
        res = conv(env[op["src"]][None], path=self.path, threads=self.threads, scale=prep.scale,
                   bias=self._t(op["bias"]), pix=None if op["pix"] is None else env[op["pix"]],
                   chan=None if op["chan"] is None else env[op["chan"]],
                   act=prep.act, act_first=op["act_first"],
                   residual=tuple(env[r][None] for r in op["res"] or []), gate_bias=self._t(op["gate_bias"]),
                   out_float=op["dst"] is not None, pack=op["dst_bits"] is not None, thr=self._t(op["thr"]),
                   div=op["div"], post_scale=op["post_scale"], post_after=op["post_after"],
                   out=None if op["dst"] is None else self._arena.take(shape + (conv.cout,), np.float32),
                   bits_out=None if op["dst_bits"] is None else self._arena.take(shape + (words(conv.cout),),
                                                                                 np.uint64))
        if op["dst"] is not None:
            env[op["dst"]] = self._arena.own(res.out, res.out[0])
        if op["dst_bits"] is not None:
            env[op["dst_bits"]] = self._arena.own(res.bits, res.bits[0])
