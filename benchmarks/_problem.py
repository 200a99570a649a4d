"""The benchmark problem, built once for gflow and handed to every peer as the same numbers.

A two-layer ReLU net in NTK scaling without bias, ``f(x) = m^{-1/2} sum_j a_j relu(w_j . x)``,
squared loss ``L = (1/2n) sum_i (f(x_i) - y_i)^2`` on teacher-labelled data
(``gflow.data.teacher``: inputs on the unit sphere, a 4-neuron ReLU teacher), Gaussian init
(``gflow.init.gaussian``), float32 throughout.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

import gflow

__all__ = ["Problem", "gd_flops", "jax_loss", "jax_loss_mn", "problem", "torch_loss",
           "torch_manual_grad"]


def gd_flops(n: int, d: int, m: int) -> float:
    """FLOPs of one full-batch gradient of the two-layer net, counting matrix products only:
    forward ``Z = X W^T`` (2nmd) and ``f = relu(Z) a`` (2nm), backward ``grad_W = G^T X``
    (2nmd) and ``grad_a = relu(Z)^T r`` (2nm): ``4 n m (d + 1)``. Elementwise work (relu,
    its mask, the residual) is O(nm) and not counted."""
    return 4.0 * n * m * (d + 1)


class Problem:
    """Data, net and initial parameters (gflow objects) plus numpy copies for the peers."""

    def __init__(self, n: int, d: int, m: int, seed: int = 0, members: int | None = None):
        k_data, k_init = jax.random.split(jax.random.key(seed))
        self.n, self.d, self.m, self.members = n, d, m, members
        self.data = gflow.data.teacher(k_data, n, d, 4, n_test=0)
        self.net = gflow.TwoLayer(m, "relu", scaling="ntk", bias=False, train_outer=True)
        if members is None:
            self.params0 = gflow.init.gaussian(k_init, self.net, d)
        else:
            keys = jax.random.split(k_init, members)
            self.params0 = jax.vmap(lambda k: gflow.init.gaussian(k, self.net, d))(keys)
        # writable numpy copies (torch.from_numpy warns on read-only buffers)
        self.X = np.array(self.data.X, np.float32)
        self.y = np.array(self.data.y, np.float32)
        self.W0 = np.array(self.params0.W, np.float32)
        self.a0 = np.array(self.params0.a, np.float32)

    @property
    def c(self) -> float:
        return 1.0 / math.sqrt(self.m)

    @property
    def flops(self) -> float:
        """FLOPs of one gradient (of all members)."""
        return gd_flops(self.n, self.d, self.m) * (self.members or 1)


def problem(n: int, d: int, m: int, seed: int = 0, members: int | None = None) -> Problem:
    return Problem(n, d, m, seed, members)


def jax_loss(params, X, y):
    """The same loss written directly in JAX, ``params = (W (m,d), a (m,))``."""
    W, a = params
    f = jax.nn.relu(X @ W.T) @ a / jnp.sqrt(W.shape[0]).astype(X.dtype)
    return 0.5 * jnp.mean((f - y) ** 2)


def jax_loss_mn(params, X, y):
    """:func:`jax_loss` with the hidden layer laid out (m, n): ``relu(W X^T)``. Same
    mathematics; XLA:CPU then runs the backward GEMM ``grad_W = G X`` on its fast GEMM path
    (with the (n, m) layout, ``G^T X`` contracts the leading axis and takes a slower path)."""
    W, a = params
    f = a @ jax.nn.relu(W @ X.T) / jnp.sqrt(W.shape[0]).astype(X.dtype)
    return 0.5 * jnp.mean((f - y) ** 2)


def torch_loss(torch, X, y, W, a):
    """The same loss in torch: ``W`` (m,d) or (E,m,d), ``a`` (m,) or (E,m); for an ensemble
    the sum over members of each member's mean loss (so each gets its own gradient)."""
    c = 1.0 / math.sqrt(W.shape[-2])
    if W.ndim == 2:
        f = torch.relu(X @ W.T) @ a * c
        return 0.5 * ((f - y) ** 2).mean()
    Z = torch.einsum("nd,emd->enm", X, W)
    f = torch.bmm(torch.relu(Z), a.unsqueeze(-1)).squeeze(-1) * c  # (E, n)
    return 0.5 * ((f - y) ** 2).mean(dim=1).sum()


def torch_manual_grad(torch, X, y, W, a):
    """Hand-derived gradient of :func:`torch_loss` for one net: ``(loss, grad_W, grad_a)``."""
    n, c = X.shape[0], 1.0 / math.sqrt(W.shape[0])
    Z = X @ W.T
    H = torch.relu(Z)
    r = (H @ a * c - y) / n
    ga = (H.T @ r) * c
    G = (Z > 0) * (r[:, None] * (a * c)[None, :])
    gW = G.T @ X
    return 0.5 * n * (r * r).sum(), gW, ga
