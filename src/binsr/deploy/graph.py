"""The packed graph checked at load, before any kernel sees it (issue 16).

Every op of a ``.bsr`` graph is checked field by field against ``docs/PACKED_FORMAT.md``: its
fields (no unknown one, each of its type: map name, tensor name, integer, number, flag), sane
bounds (a conv reaches at most :data:`MAX_SPAN` pixels, factors at most :data:`MAX_FACTOR`),
the tensors' dtypes and shapes (a bconv's ``w`` is (cout, k, k, words(cin / groups)), its vectors
(cout,) ...), and the maps it reads: defined before, of the right kind (float, bits, spatial gate,
channel vector), channel count and size. Sizes are tracked as ``mult * base + off`` of the input
(or of a ``pad_window`` base), so residuals, gates and ``bilinear_add`` operands must agree and
the output must be ``scale`` times the input. A file that fails any check is refused with one
:class:`~binsr.errors.BinsrError` line naming the op and the field.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from binsr.deploy.bitpack import words
from binsr.errors import BinsrError

__all__ = ["check_graph", "MAX_SPAN", "MAX_FACTOR", "MAX_WINDOW", "MAX_ATTN_WINDOW", "MAX_HEADS"]

#: the widest conv reach ``dil * (k - 1)`` (and so padding) accepted: 8x the widest in binsr's models
MAX_SPAN = 64
#: the largest upscaling factor (``shuffle``, ``scale`` of ``bilinear_add``/``crop``, the graph's ``scale``)
MAX_FACTOR = 16
#: the largest ``pad_window`` multiple
MAX_WINDOW = 256
#: the largest attention window and head count: the bias prepared at load is heads x window^4
#: floats (128 MiB at these bounds; SwinIR uses windows of 8 and 6 heads)
MAX_ATTN_WINDOW, MAX_HEADS = 32, 32
#: the largest channel count of a channel gate (far above any SR model's 64-180)
MAX_CHANNELS = 1 << 16

MAP, DST, TENSOR, TENSORS, MAPS, INT, NUM, FLAG = "map", "dst", "tensor", "tensors", "maps", "int", "number", "flag"
#: per op: its fields and their kinds; REQUIRED: the fields that must be present (not null)
FIELDS: dict[str, dict[str, str]] = {
    "conv": {"src": MAP, "dst": DST, "w": TENSOR, "b": TENSOR, "pad": INT, "dil": INT, "leaky": NUM, "shuffle": INT,
             "fp64": FLAG},
    "pack": {"src": MAP, "dst": DST, "thr": TENSOR},
    "bconv": {"src": MAP, "dst": DST, "dst_bits": DST, "cin": INT, "k": INT, "dil": INT, "pad": INT, "groups": INT,
              "w": TENSOR, "scale": TENSOR, "shift": TENSOR, "bias": TENSOR, "pix": MAP, "chan": MAP, "act": TENSORS,
              "leaky": NUM, "act_first": FLAG, "div": NUM, "res": MAPS, "post_scale": NUM, "post_after": INT,
              "thr": TENSOR, "gate_bias": TENSOR},
    "sigmoid": {"src": MAP, "dst": DST, "fp64": FLAG},
    "spatial_gate": {"src": MAP, "dst": DST, "w": TENSOR, "b": TENSOR, "pad": INT, "dil": INT},
    "channel_gate": {"src": MAP, "dst": DST, "w": TENSOR, "out_channels": INT},
    "bilinear_add": {"src": MAP, "add": MAP, "dst": DST, "scale": INT},
    "linear": {"src": MAP, "dst": DST, "w": TENSOR, "b": TENSOR, "fp64": FLAG},
    "layernorm": {"src": MAP, "dst": DST, "w": TENSOR, "b": TENSOR, "eps": NUM, "fp64": FLAG},
    "gelu": {"src": MAP, "dst": DST, "fp64": FLAG},
    "window_attention": {"src": MAP, "dst": DST, "heads": INT, "window": INT, "shift": INT, "scale": NUM,
                         "table": TENSOR, "fp64": FLAG},
    "pad_window": {"src": MAP, "dst": DST, "multiple": INT},
    "affine": {"src": MAP, "dst": DST, "mul": TENSOR, "add": TENSOR},
    "crop": {"src": MAP, "like": MAP, "dst": DST, "scale": INT},
    "concat": {"srcs": MAPS, "dst": DST},
    "add": {"src": MAP, "add": MAP, "dst": DST},
}
REQUIRED: dict[str, set[str]] = {
    "conv": {"src", "dst", "w"}, "pack": {"src", "dst"}, "bconv": {"src", "cin", "k", "w"},
    "sigmoid": {"src", "dst"}, "spatial_gate": {"src", "dst", "w"},
    "channel_gate": {"src", "dst", "w", "out_channels"},
    "bilinear_add": {"src", "add", "dst", "scale"}, "linear": {"src", "dst", "w", "b"},
    "layernorm": {"src", "dst", "w", "b", "eps"}, "gelu": {"src", "dst"},
    "window_attention": {"src", "dst", "heads", "window", "shift", "scale", "table"},
    "pad_window": {"src", "dst", "multiple"}, "affine": {"src", "dst", "mul", "add"},
    "crop": {"src", "like", "dst", "scale"}, "concat": {"srcs", "dst"}, "add": {"src", "add", "dst"},
}
FLOAT, BITS, GATE, VECTOR = "float map", "bit map", "spatial gate", "channel vector"


class Size(NamedTuple):
    """A map's height (and width): ``mult * base + off``, ``base`` the input or a pad_window's output."""

    base: str
    mult: int
    off: int


class Map(NamedTuple):
    kind: str
    channels: int
    size: Size | None  # None for a channel vector


class _Bad(Exception):
    """One check failed; :func:`check_graph` adds where."""


def _int(op: dict, key: str, lo: int, hi: int | None = None) -> int:
    v = op.get(key)  # the graph's own "scale" may be missing
    if not isinstance(v, int) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
        raise _Bad(f"{key} must be an integer in {lo}..{hi if hi is not None else 'inf'}, got {v!r}")
    return v


#: the largest magnitude of a number field: the engine computes in float32
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _num(op: dict, key: str) -> float:
    v = op[key]
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not abs(v) <= FLOAT32_MAX:  # NaN fails too
        raise _Bad(f"{key} must be a finite float32 number (|x| <= {FLOAT32_MAX:.4g}), got {v!r}")
    return float(v)


class _Checker:
    def __init__(self, tensors: dict[str, np.ndarray], defaults: dict[str, Any]) -> None:
        self.tensors, self.defaults = tensors, defaults
        self.index = 0  # the op being checked
        self.notes: dict[int, Any] = {}  # per op index, what the runtime needs from the check (concat)
        self.maps: dict[str, Map] = {}
        self.pads: dict[str, tuple[Size, int]] = {}  # pad base -> (size it pads, multiple)
        self.floor = 1  # the smallest input side for which every map is at least 1 pixel

    # -- fields --------------------------------------------------------------------------------
    def tensor(self, op: dict, key: str, shape: tuple[int, ...] | None = None, dtype: str = "float32",
               ndim: int | None = None) -> np.ndarray | None:
        name = op.get(key)
        if name is None:
            return None
        t = self.tensors[name]
        if t.dtype != np.dtype(dtype):
            raise _Bad(f"tensor {key} ({name}) must be {dtype}, got {t.dtype}")
        if shape is not None and t.shape != shape:
            raise _Bad(f"tensor {key} ({name}) must have shape {shape}, got {t.shape}")
        if ndim is not None and t.ndim != ndim:
            raise _Bad(f"tensor {key} ({name}) must have {ndim} dimensions, got shape {t.shape}")
        return t

    def read(self, op: dict, key: str, kind: str, channels: int | None = None) -> Map:
        m = self.maps[op[key]]
        if m.kind != kind:
            raise _Bad(f"{key} ({op[key]}) is a {m.kind}, not a {kind}")
        if channels is not None and m.channels != channels:
            raise _Bad(f"{key} ({op[key]}) has {m.channels} channels, not {channels}")
        return m

    def same_size(self, key: str, got: Size | None, want: Size) -> None:
        if got != want:
            raise _Bad(f"{key} is of size {_show(got)}, not {_show(want)}")

    def write(self, op: dict, key: str, m: Map) -> None:
        if op.get(key) is None:
            return
        if m.channels < 1:
            raise _Bad(f"{key} ({op[key]}) would have no channels")
        if m.size is not None:
            if m.size.mult * self.floor + m.size.off < 1:  # shrinking convs: refuse inputs too small
                self.floor = max(self.floor, -(-(1 - m.size.off) // m.size.mult))
        self.maps[op[key]] = m

    def fields(self, i: int, op: Any) -> dict:
        if not isinstance(op, dict) or not isinstance(op.get("op"), str):
            raise _Bad(f"op {i} is not an object with an 'op' name: {str(op)[:80]}")
        kind = op["op"]
        if kind not in FIELDS:
            raise _Bad(f"unknown op {kind!r}; the format has {', '.join(FIELDS)}")
        spec = FIELDS[kind]
        unknown = sorted(set(op) - set(spec) - {"op"})
        if unknown:
            raise _Bad(f"unknown field {', '.join(unknown)}; {kind} has {', '.join(spec)}")
        full = {k: op.get(k, self.defaults.get(k)) for k in spec}
        missing = sorted(k for k in REQUIRED[kind] if full[k] is None)
        if missing:
            raise _Bad(f"field {', '.join(missing)} missing")
        for key, what in spec.items():
            v = full[key]
            if v is None:
                continue
            if what in (MAP, DST, TENSOR) and not isinstance(v, str):
                raise _Bad(f"{key} must be a name (a string), got {v!r}")
            if what == FLAG and not isinstance(v, bool):
                raise _Bad(f"{key} must be true or false, got {v!r}")
            if what in (TENSORS, MAPS) and not (isinstance(v, list) and all(isinstance(n, str) for n in v)):
                raise _Bad(f"{key} must be a list of names, got {v!r}")
            names = v if what in (TENSORS, MAPS) else [v] if what in (MAP, TENSOR) else []
            pool = self.tensors if what in (TENSOR, TENSORS) else self.maps
            for n in names:
                if n not in pool:
                    raise _Bad(f"{key} names {'tensor' if pool is self.tensors else 'map'} {n!r}, which "
                               f"{'the file does not hold' if pool is self.tensors else 'no earlier op writes'}")
        return full

    # -- ops -----------------------------------------------------------------------------------
    def conv(self, op: dict) -> None:
        src, cout, off = self.conv_shape(op)
        if op["leaky"] is not None:
            _num(op, "leaky")
        r = _int(op, "shuffle", 1, MAX_FACTOR)
        if cout % (r * r):
            raise _Bad(f"shuffle {r} needs out channels ({cout}) divisible by {r * r}")
        self.write(op, "dst", Map(FLOAT, cout // (r * r), Size(src.size.base, src.size.mult * r, off * r)))

    def conv_shape(self, op: dict) -> tuple[Map, int, int]:
        """(src, out channels, the output's size ``off``) of a stride-1 conv's ``src``, ``w`` (k*k*C,
        out), ``b``, ``dil`` and ``pad``."""
        src = self.read(op, "src", FLOAT)
        w = self.tensor(op, "w", ndim=2)
        kk, cout = w.shape
        k = math.isqrt(kk // src.channels) if kk % src.channels == 0 else 0
        if k < 1 or k * k * src.channels != kk:
            raise _Bad(f"w {w.shape} is not (k*k*{src.channels}, out) for the {src.channels}-channel src")
        span = self.span(op, k, _int(op, "dil", 1, MAX_SPAN))
        self.tensor(op, "b", (cout,))
        return src, cout, src.size.off + 2 * op["pad"] - span

    def span(self, op: dict, k: int, dil: int) -> int:
        span = dil * (k - 1)
        if span > MAX_SPAN:
            raise _Bad(f"dil {dil} x (k {k} - 1) reaches {span} pixels, more than {MAX_SPAN}")
        _int(op, "pad", 0, span)
        return span

    def pack(self, op: dict) -> None:
        src = self.read(op, "src", FLOAT)
        self.tensor(op, "thr", (src.channels,))
        self.write(op, "dst", Map(BITS, src.channels, src.size))

    def bconv(self, op: dict) -> None:
        cin, k = _int(op, "cin", 1), _int(op, "k", 1)
        src = self.read(op, "src", BITS, cin)
        groups, dil = _int(op, "groups", 1, cin), _int(op, "dil", 1, MAX_SPAN)
        if cin % groups:
            raise _Bad(f"groups {groups} does not divide cin {cin}")
        w = self.tensor(op, "w", dtype="uint64", ndim=4)
        cout = w.shape[0]
        if w.shape != (cout, k, k, words(cin // groups)) or cout % groups or cout == 0:
            raise _Bad(f"w {w.shape} is not (cout, k, k, words(cin / groups)) = (cout, {k}, {k}, "
                       f"{words(cin // groups)}) with cout a multiple of groups {groups}")
        tail = (cin // groups) % 64
        if tail and (w[..., -1] >> np.uint64(tail) != np.uint64((1 << (64 - tail)) - 1)).any():
            raise _Bad(f"w's padding bits past cin / groups = {cin // groups} are not all 1 (as the format "
                       "stores them): cin or groups do not fit the weights")
        span = self.span(op, k, dil)
        size = Size(src.size.base, src.size.mult, src.size.off + 2 * op["pad"] - span)
        if op["scale"] is not None and op["shift"] is not None:
            raise _Bad("scale and shift are exclusive")
        self.tensor(op, "scale", (cout,))
        self.tensor(op, "shift", (cout,), "int32")
        if op["shift"] is not None and np.abs(self.tensors[op["shift"]].astype(np.int64)).max(initial=0) > 126:
            raise _Bad("shift values beyond float32's exponent range (|shift| <= 126)")
        for key in ("bias", "thr", "gate_bias"):
            self.tensor(op, key, (cout,))
        if op["act"] is not None:
            if len(op["act"]) != 3:
                raise _Bad(f"act must name three tensors (shift, slope, bias), got {op['act']}")
            for name in op["act"]:
                self.tensor({"act": name}, "act", (cout,))
        if op["leaky"] is not None:
            _num(op, "leaky")
            if op["act"] is not None:
                raise _Bad("act and leaky are exclusive")
        if _num(op, "div") == 0:
            raise _Bad("div must not be 0")
        _num(op, "post_scale")
        _int(op, "post_after", 0, len(op["res"] or []))
        if op["pix"] is not None:
            self.same_size("pix", self.read(op, "pix", GATE).size, size)
        elif op["gate_bias"] is not None:
            raise _Bad("gate_bias needs pix")
        if op["chan"] is not None:
            self.read(op, "chan", VECTOR, cout)
        for name in op["res"] or []:
            self.same_size(f"res {name}", self.read({"res": name}, "res", FLOAT, cout).size, size)
        if op["dst"] is None and op["dst_bits"] is None:
            raise _Bad("neither dst nor dst_bits is named")
        self.write(op, "dst", Map(FLOAT, cout, size))
        self.write(op, "dst_bits", Map(BITS, cout, size))

    def sigmoid(self, op: dict) -> None:
        src = self.read(op, "src", FLOAT, 1)
        self.write(op, "dst", Map(GATE, 1, src.size))

    def spatial_gate(self, op: dict) -> None:
        src, cout, off = self.conv_shape(op)
        if cout != 1:
            raise _Bad(f"a spatial gate has 1 output channel, w has {cout}")
        self.write(op, "dst", Map(GATE, 1, Size(src.size.base, src.size.mult, off)))

    def channel_gate(self, op: dict) -> None:
        self.read(op, "src", FLOAT)
        w = self.tensor(op, "w", ndim=1)
        if w.shape[0] < 1:
            raise _Bad("w is empty")
        self.write(op, "dst", Map(VECTOR, _int(op, "out_channels", 1, MAX_CHANNELS), None))

    def bilinear_add(self, op: dict) -> None:
        src = self.read(op, "src", FLOAT)
        add = self.read(op, "add", FLOAT, src.channels)
        s = _int(op, "scale", 1, MAX_FACTOR)
        self.same_size("add", add.size, Size(src.size.base, src.size.mult * s, src.size.off * s))
        self.write(op, "dst", add)

    def linear(self, op: dict) -> None:
        src = self.read(op, "src", FLOAT)
        w = self.tensor(op, "w", ndim=2)
        if w.shape[0] != src.channels:
            raise _Bad(f"w {w.shape} is not ({src.channels}, out) for the {src.channels}-channel src")
        self.tensor(op, "b", (w.shape[1],))
        self.write(op, "dst", Map(FLOAT, w.shape[1], src.size))

    def layernorm(self, op: dict) -> None:
        src = self.read(op, "src", FLOAT)
        self.tensor(op, "w", (src.channels,))
        self.tensor(op, "b", (src.channels,))
        if _num(op, "eps") <= 0:
            raise _Bad(f"eps must be > 0, got {op['eps']}")
        self.write(op, "dst", src)

    def gelu(self, op: dict) -> None:
        self.write(op, "dst", self.read(op, "src", FLOAT))

    def window_attention(self, op: dict) -> None:
        src = self.read(op, "src", FLOAT)
        heads, window = _int(op, "heads", 1, MAX_HEADS), _int(op, "window", 1, MAX_ATTN_WINDOW)
        _int(op, "shift", 0, window - 1)
        _num(op, "scale")
        if src.channels % (3 * heads):
            raise _Bad(f"src has {src.channels} channels, not 3 x heads ({heads}) x head dim")
        self.tensor(op, "table", ((2 * window - 1) ** 2, heads))
        base = self.pads.get(src.size.base)
        if base is None or base[1] % window or src.size.off % window:
            raise _Bad(f"src is not padded to a multiple of the window {window} (pad_window)")
        self.write(op, "dst", Map(FLOAT, src.channels // 3, src.size))

    def pad_window(self, op: dict) -> None:
        src = self.read(op, "src", FLOAT)
        base = f"pad{len(self.pads)}"
        self.pads[base] = (src.size, _int(op, "multiple", 1, MAX_WINDOW))
        self.write(op, "dst", Map(FLOAT, src.channels, Size(base, 1, 0)))

    def affine(self, op: dict) -> None:
        src = self.read(op, "src", FLOAT)
        self.tensor(op, "mul", (src.channels,))
        self.tensor(op, "add", (src.channels,))
        self.write(op, "dst", src)

    def crop(self, op: dict) -> None:
        src, like = self.read(op, "src", FLOAT), self.maps[op["like"]]
        s = _int(op, "scale", 1, MAX_FACTOR)
        if like.size is None:
            raise _Bad(f"like ({op['like']}) is a {like.kind}, which has no size")
        want = Size(like.size.base, like.size.mult * s, like.size.off * s)
        padded = self.pads.get(src.size.base)
        covers = src.size == want or (padded is not None and padded[0] == like.size and src.size.mult >= s
                                      and src.size.off >= 0)
        if not covers:
            raise _Bad(f"src of size {_show(src.size)} does not cover {_show(want)}")
        self.write(op, "dst", Map(FLOAT, src.channels, want))

    def concat(self, op: dict) -> None:
        if not op["srcs"]:
            raise _Bad("srcs must name at least one bit map")
        maps = [self.read({"srcs": name}, "srcs", BITS) for name in op["srcs"]]
        for name, m in zip(op["srcs"], maps):
            self.same_size(f"srcs {name}", m.size, maps[0].size)
        channels = [m.channels for m in maps]
        if sum(channels) > MAX_CHANNELS:
            raise _Bad(f"srcs hold {sum(channels)} channels, more than {MAX_CHANNELS}")
        self.notes[self.index] = tuple(channels)
        self.write(op, "dst", Map(BITS, sum(channels), maps[0].size))

    def add(self, op: dict) -> None:
        src = self.read(op, "src", FLOAT)
        add = self.read(op, "add", FLOAT, src.channels)
        self.same_size("add", add.size, src.size)
        self.write(op, "dst", src)


def _show(size: Size | None) -> str:
    if size is None:
        return "none"
    return f"{size.mult} x {size.base}{f' {size.off:+d}' if size.off else ''}"


def check_graph(graph: Any, tensors: dict[str, np.ndarray], defaults: dict[str, Any], path: Any,
                notes: dict[int, Any] | None = None) -> int:
    """Check a packed graph against ``tensors`` (see the module doc); returns the smallest input
    side it runs on. BinsrError (one line) names the op and field of the first problem.
    ``notes``: a dict that receives, per op index, what the check learnt that the op's runner
    needs (a ``concat``: the channel counts of its bit maps, which the bits alone do not hold)."""
    where = f"{path}: packed graph"
    try:
        if not isinstance(graph.get("ops"), list):
            raise _Bad(f"ops must be a list, got {type(graph.get('ops')).__name__}")
        for key in ("input", "output"):
            if not isinstance(graph.get(key), str):
                raise _Bad(f"{key} must be a map name, got {graph.get(key)!r}")
        scale = _int(graph, "scale", 1, MAX_FACTOR)
        bad = sorted(k for k, t in tensors.items() if t.dtype.kind == "f" and not np.isfinite(t).all())
        if bad:
            raise _Bad(f"tensor {bad[0]} holds NaN or infinite values")
        checker = _Checker(tensors, defaults)
        checker.maps[graph["input"]] = Map(FLOAT, 3, Size("x", 1, 0))
    except _Bad as exc:
        raise BinsrError(f"{where}: {exc}") from None
    for i, raw in enumerate(graph["ops"]):
        try:
            checker.index = i
            op = checker.fields(i, raw)
            getattr(checker, raw["op"])(op)
        except _Bad as exc:
            kind = raw.get("op") if isinstance(raw, dict) else None
            raise BinsrError(f"{where}: op {i} ({kind}): {exc}") from None
    out = checker.maps.get(graph["output"])
    if out is None or out.kind != FLOAT or out.channels != 3 or out.size != Size("x", scale, 0):
        raise BinsrError(f"{where}: output {graph['output']!r} is not a 3-channel float map {scale} times the "
                         f"input's size ({'never written' if out is None else f'{out.kind}, {out.channels} channels, '}"
                         f"{'' if out is None else _show(out.size)})")
    if notes is not None:
        notes.update(checker.notes)
    return checker.floor
