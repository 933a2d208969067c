"""The alpha/beta step of the bi-level search (DARTS, Liu et al. ICLR 2019, Sec. 2.3).

The architecture objective is SRBNAS eq. 8 on a held-out batch:
``L1(val) + lambda_alpha * Linear * R(alpha) + lambda_beta * Linear * R(beta)`` (eqs. 4-7).
Reading of eq. 8: the paper writes ``lambda Linear(R(alpha)) + mu Linear(R(beta))``, reusing
``mu``, eq. 4's L1 weight inside ``R(alpha)`` (Table 4 varies it from 0.2 to 0.8 with rho). binsr
keeps the beta term's weight separate, ``reg.lambda_beta``, default 1.5 = lambda (EBNAS, which
SRBNAS follows, weights both terms by the same lambda), so that the Table 4 ablation moves
``R(alpha)`` only; ``--set reg.lambda_beta=<mu>`` gives eq. 8 read literally.
First order: the gradient at the current weights. Second order: DARTS eq. 7 with the virtual
step ``w' = w - xi * grad_w L_train`` taken as plain SGD with ``xi`` = the current model lr, and
the Hessian-vector product by central finite differences (DARTS eq. 8, ``eps = 0.01 / |grad|``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from binsr.nas.regularizers import alpha_regularizer, beta_regularizer
from binsr.nas.supernet import Supernet

__all__ = ["ArchLoss", "Architect"]


@dataclass
class ArchLoss:
    """Terms of the last arch step (floats, for logging)."""

    task: float
    reg_alpha: float
    reg_beta: float
    total: float


class Architect:
    """Updates ``model.alphas`` and ``model.betas`` with Adam on the eq. 8 objective."""

    def __init__(self, model: Supernet, lr: float, betas: tuple[float, float], weight_decay: float,
                 lambda_alpha: float, mu: float, rho: float, l1_on: str, lambda_beta: float, gamma: float,
                 order: str = "first") -> None:
        self.model = model
        self.optimizer = torch.optim.Adam(model.arch_parameters(), lr=lr, betas=betas, weight_decay=weight_decay)
        self.lambda_alpha, self.mu, self.rho, self.l1_on = lambda_alpha, mu, rho, l1_on
        self.lambda_beta, self.gamma, self.order = lambda_beta, gamma, order

    def regularizers(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``R(alpha)`` (eq. 4 summed over edges) and ``R(beta)`` (eq. 7)."""
        m = self.model
        return (alpha_regularizer(m.alphas, self.mu, self.rho, self.l1_on, m.op_mask),
                beta_regularizer(m.edge_weights(), self.gamma))

    def step(self, lr_val: torch.Tensor, hr_val: torch.Tensor, ramp: float,
             train_batch: tuple[torch.Tensor, torch.Tensor] | None = None, xi: float = 0.0) -> ArchLoss:
        """One Adam step on alphas/betas; ``ramp`` is ``Linear = e / E`` (eq. 6).

        Second order needs ``train_batch`` and ``xi`` (the model lr).
        """
        self.optimizer.zero_grad(set_to_none=True)
        if self.order == "second":
            task = self._unrolled_grads(lr_val, hr_val, *train_batch, xi)
        else:
            task = F.l1_loss(self.model(lr_val), hr_val)
            task.backward()
        r_a, r_b = self.regularizers()
        reg = ramp * (self.lambda_alpha * r_a + self.lambda_beta * r_b)
        if reg.requires_grad:
            reg.backward()
        self.optimizer.step()
        task, r_a, r_b, reg = (float(t.detach()) for t in (task, r_a, r_b, reg))
        return ArchLoss(task, r_a, r_b, task + reg)

    def _unrolled_grads(self, lr_val: torch.Tensor, hr_val: torch.Tensor, lr_train: torch.Tensor,
                        hr_train: torch.Tensor, xi: float) -> torch.Tensor:
        """Put the second-order task gradient (DARTS eqs. 7-8) into ``.grad`` of the arch params."""
        m = self.model
        weights, arch = m.weight_parameters(), m.arch_parameters()
        backup = [w.detach().clone() for w in weights]

        def grads(loss: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
            g = torch.autograd.grad(loss, params, allow_unused=True)
            return [torch.zeros_like(p) if gi is None else gi for p, gi in zip(params, g)]

        g_train = grads(F.l1_loss(m(lr_train), hr_train), weights)
        with torch.no_grad():
            for w, g in zip(weights, g_train):
                w.sub_(xi * g)
        task = F.l1_loss(m(lr_val), hr_val)
        g_all = grads(task, arch + weights)
        d_arch, d_w = g_all[:len(arch)], g_all[len(arch):]
        eps = 0.01 / torch.sqrt(sum(g.pow(2).sum() for g in d_w)).clamp_min(1e-12)
        hess = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                for w, b, d in zip(weights, backup, d_w):
                    w.copy_(b + sign * eps * d)
            hess.append(grads(F.l1_loss(m(lr_train), hr_train), arch))
        with torch.no_grad():
            for w, b in zip(weights, backup):
                w.copy_(b)
        for p, da, gp, gn in zip(arch, d_arch, *hess):
            p.grad = da - xi * (gp - gn) / (2 * eps)
        return task.detach()
