"""Discrete cells: derivation from alphas/betas, JSON round-trip and a drawing (``cell.png``).

A cell (DARTS, Liu et al. ICLR 2019, Sec. 2.1) has two inputs, state 0 = ``c_{k-2}`` and state 1 =
``c_{k-1}``, and ``steps`` intermediate nodes, node ``j`` being state ``j + 2``. A genotype lists
per node its two incoming edges ``(op, input_state)``; the cell output fuses all nodes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from binsr.errors import UsageError
from binsr.files import read_json

__all__ = ["Genotype", "DEFAULT_GENOTYPE", "derive_genotype", "load_genotype", "random_genotype", "shipped_genotypes",
           "plot_cell"]

_FORMAT = "binsr.srbnas.genotype/1"


@dataclass(frozen=True)
class Genotype:
    """Per node, its two incoming edges ``(op name, input state)``; ``groups`` of the group convs."""

    nodes: tuple[tuple[tuple[str, int], ...], ...]
    groups: int
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def steps(self) -> int:
        return len(self.nodes)

    def to_dict(self) -> dict[str, Any]:
        return {"format": _FORMAT, "groups": self.groups,
                "nodes": [[[op, src] for op, src in node] for node in self.nodes], "meta": self.meta}

    def save(self, path: str | Path) -> None:
        """Write the genotype as JSON (atomically)."""
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def from_dict(cls, raw: Any) -> Genotype:
        """Parse and validate; a malformed genotype raises a one-line UsageError."""
        from binsr.nas.ops import OPS

        if not isinstance(raw, dict) or raw.get("format") != _FORMAT:
            raise UsageError(f"not an SRBNAS genotype (expected \"format\": \"{_FORMAT}\")")
        groups, nodes = raw.get("groups"), raw.get("nodes")
        if not isinstance(groups, int) or groups <= 0 or not isinstance(nodes, list) or not nodes:
            raise UsageError("genotype needs a positive integer 'groups' and a non-empty list 'nodes'")
        parsed = []
        for j, node in enumerate(nodes):
            if not isinstance(node, list) or not node:
                raise UsageError(f"genotype node {j}: expected a list of [op, input] edges")
            edges = []
            for edge in node:
                if (not isinstance(edge, (list, tuple)) or len(edge) != 2 or edge[0] not in OPS
                        or edge[0] == "none" or not isinstance(edge[1], int) or not 0 <= edge[1] < j + 2):
                    valid = ", ".join(o for o in OPS if o != "none")
                    raise UsageError(f"genotype node {j}: bad edge {edge!r} (op from {valid}, "
                                     f"input state in 0..{j + 1})")
                edges.append((edge[0], edge[1]))
            parsed.append(tuple(edges))
        return cls(tuple(parsed), groups, dict(raw.get("meta") or {}))


#: the shipped genotype ``load_genotype(None)`` returns (searched with configs/search/srbnas_x4.yaml)
DEFAULT_GENOTYPE = "srbnas_x4"
_SHIPPED = Path(__file__).parent / "genotypes"


def shipped_genotypes() -> list[str]:
    """Names of the genotypes shipped in ``binsr/nas/genotypes/``."""
    return sorted(p.stem for p in _SHIPPED.glob("*.json"))


def _kernel_area(genotype: Genotype) -> int:
    """Sum of the k x k footprints of a cell's conv ops (its binary weights, up to channels/groups)."""
    from binsr.nas.ops import CONV_OPS

    return sum(int(op.rsplit("_", 1)[1].split("x")[0]) ** 2 for node in genotype.nodes for op, _ in node
               if op in CONV_OPS)


def random_genotype(seed: int, steps: int, groups: int, like: Genotype | None = None, tolerance: float = 0.1,
                    tries: int = 100_000) -> Genotype:
    """The random-architecture baseline of NAS papers (DARTS, Liu et al. 2019, Sec. 3.3; Li & Talwalkar,
    UAI 2019): per node two distinct input states drawn uniformly, per edge an op drawn uniformly from
    the search space without ``none``; the same ``seed`` gives the same cell.

    With ``like``, draws are repeated until the cell's conv footprint (the sum of k^2 over its conv
    ops, i.e. its binary weights) is within ``tolerance`` of ``like``'s: a random cell of the same
    size, as the SRBNAS issue's sanity check asks (uniform draws are larger than a searched cell
    that picked small ops)."""
    from binsr.nas.ops import OPS

    rng = np.random.default_rng(seed)
    ops = [o for o in OPS if o != "none"]
    target = None if like is None else _kernel_area(like)
    for _ in range(tries):
        nodes = tuple(tuple((ops[int(rng.integers(len(ops)))], int(src))
                            for src in sorted(rng.choice(j + 2, size=2, replace=False)))
                      for j in range(steps))
        cell = Genotype(nodes, groups, {"random_seed": seed, **({"footprint": target} if like else {})})
        if target is None or abs(_kernel_area(cell) - target) <= tolerance * target:
            return cell
    raise UsageError(f"no random cell within {tolerance:.0%} of the size asked for in {tries} draws")


def load_genotype(source: str | Path | dict | Genotype | None) -> Genotype:
    """A genotype from a shipped name (``shipped_genotypes()``), a JSON path, a dict, a
    :class:`Genotype`, ``None`` (the shipped :data:`DEFAULT_GENOTYPE`), ``"random:SEED[:REF]"`` (a
    :func:`random_genotype` with the node count and groups of the reference genotype ``REF``, a
    shipped name or a JSON path, default :data:`DEFAULT_GENOTYPE`) or ``"random_sized:SEED[:REF]"``
    (the same, redrawn until it has ``REF``'s size: ``random_sized:1:srbnas_x3`` for the x3 cell)."""
    if isinstance(source, Genotype):
        return source
    if isinstance(source, dict):
        return Genotype.from_dict(source)
    if isinstance(source, str) and source.split(":", 1)[0] in ("random", "random_sized"):
        kind, _, rest = source.partition(":")
        seed, _, ref = rest.partition(":")
        if not seed.isdigit():
            raise UsageError(f"bad genotype {source!r}: expected {kind}:<non-negative integer seed>[:<genotype>]")
        base = load_genotype(ref or None)
        return random_genotype(int(seed), base.steps, base.groups, base if kind == "random_sized" else None)
    name = DEFAULT_GENOTYPE if source is None else str(source)
    path = _SHIPPED / f"{name}.json" if name in shipped_genotypes() else Path(name)
    if not path.exists():
        shipped = ", ".join(shipped_genotypes()) or "none"
        raise UsageError(f"genotype file not found: {path} (shipped genotypes: {shipped})")
    return Genotype.from_dict(read_json(path, "genotype", max_bytes=1 << 20))


def derive_genotype(alphas: torch.Tensor, edge_weights: list[torch.Tensor], ops: list[str], groups: int,
                    keep: int = 2) -> Genotype:
    """PC-DARTS derivation (``model_search.py::genotype``).

    Edges are numbered node by node (node ``j`` has ``j + 2`` inputs). An edge's strength is its
    normalised beta ``s_ij`` times its strongest op probability (``none`` excluded); each node keeps
    its ``keep`` strongest incoming edges, each with its strongest op (``none`` excluded).
    """
    probs = torch.softmax(alphas.detach().float().cpu(), dim=-1)
    usable = torch.tensor([o != "none" for o in ops])
    probs = probs.masked_fill(~usable, -1.0)
    nodes, start = [], 0
    for j, s in enumerate(edge_weights):
        n_in = j + 2
        best_p, best_op = probs[start:start + n_in].max(dim=-1)
        strength = s.detach().float().cpu() * best_p
        chosen = sorted(torch.argsort(strength, descending=True)[:keep].tolist())
        nodes.append(tuple((ops[int(best_op[i])], int(i)) for i in chosen))
        start += n_in
    if start != alphas.shape[0]:
        raise ValueError(f"{alphas.shape[0]} alpha rows for {start} edges")
    return Genotype(tuple(nodes), groups)


def _state_name(i: int) -> str:
    return {0: "c_{k-2}", 1: "c_{k-1}"}.get(i, str(i - 2))


def _draw_edge(ax: Any, a: tuple[float, float], b: tuple[float, float], rad: float, label: str, color: str,
               dashed: bool = False) -> None:
    """A quadratic Bezier arrow from ``a`` to ``b`` bent by ``rad``, labelled at 60% of its length."""
    (x1, y1), (x2, y2) = a, b
    cx, cy = (x1 + x2) / 2 + rad * (y2 - y1), (y1 + y2) / 2 - rad * (x2 - x1)
    t = np.linspace(0.0, 1.0, 200)
    xs = (1 - t) ** 2 * x1 + 2 * (1 - t) * t * cx + t ** 2 * x2
    ys = (1 - t) ** 2 * y1 + 2 * (1 - t) * t * cy + t ** 2 * y2
    keep = (np.hypot(xs - x1, ys - y1) > 0.4) & (np.hypot(xs - x2, ys - y2) > 0.4)  # stop at the node boxes
    xs, ys = xs[keep], ys[keep]
    ax.plot(xs[:-1], ys[:-1], color=color, lw=1.2, ls="--" if dashed else "-")
    ax.annotate("", xy=(xs[-1], ys[-1]), xytext=(xs[-3], ys[-3]),
                arrowprops=dict(arrowstyle="-|>", color=color, lw=1.2))
    if label:
        i = int(0.6 * (len(xs) - 1))
        ax.text(xs[i], ys[i], label, ha="center", va="center", fontsize=8,
                bbox=dict(boxstyle="round,pad=0.2", fc="lightyellow", ec="0.6"))


def plot_cell(genotype: Genotype, path: str | Path, title: str = "") -> None:
    """Draw the cell (inputs, nodes, output; edges labelled with their ops) to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = genotype.steps
    pos = {0: (0.0, 1.3), 1: (0.0, -1.3)}
    for j in range(steps):
        pos[j + 2] = (2.4 * (j + 1), 0.8 if j % 2 == 0 else -0.8)
    out = (2.4 * (steps + 1), 0.0)
    fig, ax = plt.subplots(figsize=(1.0 * (out[0] + 2.0), 4.6))
    for j, node in enumerate(genotype.nodes):
        for k, (op, src) in enumerate(node):
            _draw_edge(ax, pos[src], pos[j + 2], 0.2 if k == 0 else -0.2, op, "0.25")
        _draw_edge(ax, pos[j + 2], out, 0.0, "", "0.7", dashed=True)
    for i, (x, y) in pos.items():
        ax.text(x, y, _state_name(i), ha="center", va="center", fontsize=10,
                bbox=dict(boxstyle="circle,pad=0.3" if i >= 2 else "round,pad=0.4",
                          fc="lightblue" if i >= 2 else "lightgreen", ec="0.3"))
    ax.text(*out, "c_{k}", ha="center", va="center", fontsize=10,
            bbox=dict(boxstyle="round,pad=0.4", fc="wheat", ec="0.3"))
    ax.set_xlim(-1.0, out[0] + 1.0)
    ax.set_ylim(-2.3, 2.3)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title or f"SRBNAS cell (groups={genotype.groups})", fontsize=10)
    fig.text(0.5, 0.02, "c_{k} = c_{k-1} + binary 1x1 conv(concat of the nodes) (dashed)", ha="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
