"""SRBNAS architecture regularisers (Su et al., Biomimetics 2024, eqs. 4-8).

Two facts about the equations as written, each checked by ``tests/nas/test_regularizers.py``:

* Eq. 4's L1 term ``mu * sum_o |p_o|`` is over a softmax, so it equals ``mu`` for every alpha and
  has zero gradient: with ``l1_on="softmax"`` only the L2 term ``-rho * sum_o p_o^2`` (which
  sharpens each edge's distribution) moves the alphas, and the paper's (mu, rho) ablation
  (Table 4) is a sweep of rho alone. ``l1_on="raw"`` replaces it by the usual L1 penalty
  ``+mu * sum_o |alpha_o|`` on the raw alphas, the sparsity the paper's prose describes (with the
  minus sign of eq. 4 it would instead reward unbounded ``|alpha|``).
* Eq. 7's ``gamma * (sum_i s_ij - 2)^2`` is constant when ``s`` is a softmax over a node's inputs
  (PC-DARTS edge normalisation, ``sum_i s_ij = 1``); it only acts with ``beta_norm="sigmoid"``.
"""

from __future__ import annotations

import torch

__all__ = ["alpha_regularizer", "beta_regularizer", "ramp"]


def alpha_regularizer(alphas: torch.Tensor, mu: float, rho: float, l1_on: str = "softmax",
                      mask: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_edges R_ij(alpha)`` of eq. 4 for ``alphas`` of shape (edges, ops).

    ``R_ij = -(mu * sum_o |p_o| + rho * sum_o p_o^2)`` with ``p = softmax(alpha_ij)`` (eq. 3);
    ``l1_on="raw"`` uses ``+mu * sum_o |alpha_o|`` for the L1 term (see the module docstring).
    ``mask`` (edges, ops), bool: the ops still in the search (``Supernet.shrink``); the others
    are left out of both terms.
    """
    if mask is not None:
        p = torch.softmax(alphas.masked_fill(~mask, float("-inf")), dim=-1)
        alphas = alphas * mask
    else:
        p = torch.softmax(alphas, dim=-1)
    l2 = -rho * p.pow(2).sum()
    if l1_on == "softmax":
        return l2 - mu * p.abs().sum()
    if l1_on == "raw":
        return l2 + mu * alphas.abs().sum()
    raise ValueError(f"l1_on must be 'softmax' or 'raw', got {l1_on!r}")


def beta_regularizer(edge_weights: list[torch.Tensor], gamma: float) -> torch.Tensor:
    """``R(beta)`` of eq. 7 (EBNAS variance-based edge regulariser).

    ``edge_weights[j]`` holds ``s_ij`` for the inputs ``i`` of node ``j``;
    ``R = sum_j ( -sum_i (s_ij - mean_i s_ij)^2 + gamma * (sum_i s_ij - 2)^2 )``.
    """
    total = edge_weights[0].new_zeros(())
    for s in edge_weights:
        total = total - (s - s.mean()).pow(2).sum() + gamma * (s.sum() - 2.0).pow(2)
    return total


def ramp(epoch: int, ramp_epochs: int) -> float:
    """``Linear = e / E`` of eq. 6, capped at 1 (``epoch`` counted from 0, so the first is unregularised)."""
    return min(epoch / ramp_epochs, 1.0)
