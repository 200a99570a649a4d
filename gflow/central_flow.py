"""The central flow of gradient descent: GD's time-averaged trajectory at the edge of stability.

Cohen, Damian, Talwalkar, Kolter & Lee, "Understanding Optimization in Deep Learning with
Central Flows" (ICLR 2025, arXiv 2410.24206), Section 3 (gradient descent). On GD's time axis
``t = k * lr`` (the paper's time is the step count, ``dw/dk = lr * dw/dt``):

* below the edge (every Hessian eigenvalue under ``2/lr``): gradient flow, ``w' = -grad L``;
* one eigenvalue at the edge (the paper's Section 3.1): ``w' = -(grad L + (sigma^2/2) grad S)``,
  ``S = lambda_1(H)``, ``grad S = grad_w (u^T H(w) u)`` for the top eigenvector ``u``, with
  ``sigma^2 >= 0`` such that ``dS/dt = 0``: ``sigma^2 = 2 <-grad L, grad S> / |grad S|^2``,
  so ``w'`` is the projection of ``-grad L`` onto the tangent space of ``{S = 2/lr}`` (the
  equivalent-control sliding mode of :mod:`gflow.kinks`);
* several eigenvalues at the edge (Section 3.2): ``w' = -(grad L + (1/2) grad_w <Sigma,
  H(w)>)`` with ``Sigma = U X U^T`` on the top eigenvectors ``U`` (n, k) and the k x k PSD
  matrix ``X`` the solution of the semidefinite complementarity problem (SDCP)
  ``X >= 0,  M(X) >= 0,  <X, M(X)> = 0`` where ``M(X) = -d/dt (U^T H U)`` is affine in ``X``.

The time-averaged GD loss is predicted as ``L(w) + <Sigma, H>/2 = L(w) + tr(X)/lr`` (the
paper's eq. for the loss along the central flow; ``U^T H U = (2/lr) I`` at the edge).

What is solved here, and why it is the paper's problem. With ``J_ij = grad_w (u_i^T H u_j)``,
``C_ij = <J_ij, grad L>`` and ``G[X]_ij = sum_kl <J_ij, J_kl> X_kl`` (a PSD map),
``-d/dt (U^T H U) = C + G[X]/2``. As in the authors' code (``src/flows.py``), the condition is
imposed on the linearised eigenvalues one relaxation time ahead, which adds a restoring
term: ``M(X) = kappa (2/lr I - Lambda) + C + G[X]/2`` with ``Lambda = diag(lambda_1..k)``
and ``kappa = edge_rate / lr`` (their code uses ``dt`` = 1/4 step, i.e. ``edge_rate = 4``).
So the flow is *exactly* gradient flow while ``M(0) = kappa (2/lr - Lambda) + C >= 0`` (no
eigenvalue would cross the edge within ``1/kappa``), and once it slides, every active
eigenvalue obeys ``d lambda/dt = kappa (2/lr - lambda)``: it is pulled to ``2/lr``
exponentially and then held there. The SDCP is the optimality condition of the convex
problem ``min_{X >= 0} <C', X> + <X, G[X]>/4`` (``C' = M(0)``; the authors solve this with
CVXPY on the host); here it is solved jittably by accelerated projected gradient (FISTA with
the PSD projection by ``eigh``) followed by an exact solve on the face the iterates found
(:func:`solve_sdcp`); for ``k = 1`` this is the closed form ``X = max(0, -M(0) / (G/2))``.

Cost per evaluation of the vector field: one gradient, ``iters`` HVPs (Lanczos for the top
``k`` eigenpairs, from a fixed start: a vector field is a function of ``w`` alone), one
directional third derivative (``C``), and, only while sliding, ``k^2`` third-derivative
gradients (``J``, one reverse pass over a ``k``-vector HVP). For piecewise-linear activations
``H`` and ``D^3 L`` are those of the current activation pattern (as in
:mod:`gflow.modified`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from . import observe
from .curvature import HessianOperator, top_eigpairs
from .discrete import check_lr
from .dynamics import Plan
from .flow import GradientFlow

__all__ = ["CentralFlow", "CentralLoss", "solve_sdcp"]


def _sym(A):
    return 0.5 * (A + jnp.swapaxes(A, -1, -2))


def _psd(X):
    d, V = jnp.linalg.eigh(_sym(X))
    return (V * jnp.maximum(d, 0)) @ V.T


def solve_sdcp(A, B, *, iters: int = 300):
    """The solution ``X`` (k, k) of the semidefinite complementarity problem ``X >= 0``,
    ``A + B[X] >= 0``, ``<X, A + B[X]> = 0`` for symmetric ``A`` (k, k) and a PSD map
    ``B`` (k, k, k, k), ``B[X]_ij = sum_kl B_ijkl X_kl``: the minimiser of ``<A, X> +
    <X, B[X]>/2`` over PSD ``X``.

    ``iters`` steps of FISTA with the PSD projection (step ``1/|B|``), then the exact
    solution on the face ``{P X P}`` of the iterate's range ``P`` (a least-squares solve of
    ``P (A + B[P Z P]) P = 0``), kept if it is feasible to rounding. Jittable, fixed cost.
    """
    k = A.shape[0]
    A = _sym(A)
    Bm = B.reshape(k * k, k * k)
    Bm = 0.5 * (Bm + Bm.T)
    eps = jnp.finfo(A.dtype).eps
    lip = jnp.maximum(jnp.linalg.eigvalsh(Bm)[-1], eps)
    apply = lambda X: (Bm @ X.reshape(-1)).reshape(k, k)  # noqa: E731

    def body(_, c):
        X, Y, s = c
        Xn = _psd(Y - (A + apply(Y)) / lip)
        sn = 0.5 * (1 + jnp.sqrt(1 + 4 * s * s))
        return Xn, Xn + ((s - 1) / sn) * (Xn - X), sn

    zero = jnp.zeros_like(A)
    X = jax.lax.fori_loop(0, iters, body, (zero, zero, jnp.ones((), A.dtype)))[0]
    # the face of X: its numerically nonzero eigenvectors
    d, V = jnp.linalg.eigh(X)
    keep = d > 1e-6 * jnp.maximum(d[-1], eps)
    P = (V * keep) @ V.T
    PP = jnp.kron(P, P)
    K = PP @ Bm @ PP
    z = -jnp.linalg.pinv(K, hermitian=True) @ (PP @ A.reshape(-1))
    Xp = _sym(P @ z.reshape(k, k) @ P)
    scale = jnp.maximum(jnp.max(jnp.abs(A)), eps)
    tol = 1e3 * eps * scale
    ok = (jnp.linalg.eigvalsh(Xp)[0] >= -tol / lip) & (
        jnp.linalg.eigvalsh(A + apply(Xp))[0] >= -tol)
    return jnp.where(ok, _psd(Xp), X)


class _Edge(eqx.Module):
    """The central flow's pieces at one point (flattened trainable coordinates)."""

    field: Any   # the vector field (a pytree like params)
    eigs: Any    # (k,) top Hessian eigenvalues
    X: Any       # (k, k) the covariance in the eigenbasis


class CentralFlow(GradientFlow):
    """The central flow of GD with step ``lr`` (module docstring), integrated by diffrax on
    GD's time axis ``t = k * lr``.

    Arguments:
        lr: GD's step (a number > 0).
        k: how many top Hessian eigenvalues are tracked (and may sit at the edge at once).
        iters: Lanczos steps per evaluation (HVPs), capped at the number of parameters.
        edge_rate: ``kappa * lr``: the rate, per GD step, at which an eigenvalue that would
            cross ``2/lr`` is pulled back onto it (the authors' code: 4 substeps per step).
        sdcp_iters: FISTA iterations of :func:`solve_sdcp` (k > 1).
        **kwargs: the solver settings of :class:`gflow.GradientFlow` (``rtol``, ``atol``,
            ``solver``, ``controller``, ``dt0``, ``max_steps``); ``kinks=True`` is refused.

    ``stats["hvp_evals"]`` counts the Lanczos HVPs (``iters`` per evaluation of the field);
    the third-derivative passes come on top. :meth:`at` gives the field, the tracked
    eigenvalues and ``X`` at a point; :meth:`predicted_loss` GD's predicted time-averaged
    loss ``L + tr(X)/lr``, which :func:`CentralLoss` records as an observable.
    """

    lr: Any = None
    k: int = eqx.field(static=True, default=1)
    iters: int = eqx.field(static=True, default=30)
    edge_rate: Any = 4.0
    sdcp_iters: int = eqx.field(static=True, default=300)

    member_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, lr, k: int = 1, iters: int = 30, edge_rate=4.0, sdcp_iters: int = 300,
                 **kwargs):
        if kwargs.get("kinks"):
            raise ValueError("CentralFlow: kinks=True is not available (the flow needs the "
                             "Hessian and its derivative); use kinks=False.")
        super().__init__(**kwargs)
        self.lr, self.k, self.iters = lr, k, iters
        self.edge_rate, self.sdcp_iters = edge_rate, sdcp_iters

    def __check_init__(self):
        check_lr(self.lr, "CentralFlow")
        if callable(self.lr) or np.ndim(self.lr) != 0:
            raise ValueError("CentralFlow: lr must be a single number > 0 (a schedule or "
                             "per-member steps have no single edge 2/lr).")
        for name, lo in (("k", 1), ("iters", 1), ("sdcp_iters", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < lo:
                raise ValueError(f"CentralFlow: {name} must be an integer >= {lo}, got {v!r}.")
        if self.k > self.iters:
            raise ValueError(f"CentralFlow: k={self.k} needs iters >= k, got {self.iters}.")
        r = self.edge_rate
        if isinstance(r, bool) or not isinstance(r, int | float | np.ndarray | jax.Array) \
                or not np.all(np.asarray(r) > 0):
            raise ValueError(f"CentralFlow: edge_rate must be a number > 0, got {r!r}.")

    def describe(self) -> str:
        name = self.solver if isinstance(self.solver, str) else type(self.solver).__name__
        return (f"CentralFlow(lr={self.lr}, k={self.k}, iters={self.iters}, "
                f"edge_rate={self.edge_rate}, solver={name}, rtol={self.rtol}, "
                f"atol={self.atol})")

    # -- the flow ----------------------------------------------------------------------
    def at(self, objective, params) -> _Edge:
        """The vector field, the top ``k`` eigenvalues and ``X`` at ``params``."""
        g_tree = objective.grad(params)
        gf = jax.tree.map(jnp.negative, g_tree)
        x, unravel = ravel_pytree(params)
        mask = ravel_pytree(objective.mask_grad(params, jax.tree.map(jnp.ones_like, params)))[0]
        mask = mask.astype(x.dtype)
        g = ravel_pytree(g_tree)[0] * mask
        gradf = jax.grad(lambda z: objective.loss(unravel(z)))
        _, lin = jax.linearize(gradf, x)
        op = HessianOperator(lambda v: mask * lin(mask * v), x.shape[0], mask, x.dtype)
        k = min(self.k, x.shape[0])
        lam, U = top_eigpairs(op, k, self.iters)
        lam = jnp.where(jnp.isnan(lam), -jnp.inf, lam)  # no such direction: never at the edge
        U = jnp.nan_to_num(U)

        def UHU(z):  # U^T H(z) U, (k, k)
            hu = jax.vmap(lambda u: jax.jvp(gradf, (z,), (mask * u,))[1], in_axes=1,
                          out_axes=1)(U)
            return U.T @ (mask[:, None] * hu)

        lr = jnp.asarray(self.lr, x.dtype)
        kappa = jnp.asarray(self.edge_rate, x.dtype) / lr
        C = _sym(jax.jvp(UHU, (x,), (g,))[1])  # <J_ij, grad L>
        gap = jnp.where(jnp.isfinite(lam), 2 / lr - lam, 1 / lr)
        M0 = kappa * jnp.diag(gap) + C
        active = jnp.linalg.eigvalsh(M0)[0] < 0

        def slide(_):
            J = jax.jacrev(UHU)(x) * mask  # (k, k, n)
            B = 0.5 * jnp.einsum("ijn,kln->ijkl", J, J)
            X = solve_sdcp(M0, B, iters=self.sdcp_iters) if k > 1 else \
                jnp.maximum(-M0 / jnp.maximum(B[0, 0], jnp.finfo(x.dtype).tiny), 0)
            corr = unravel(0.5 * jnp.einsum("kl,kln->n", X, J))
            return jax.tree.map(lambda a, b: a - b, gf, corr), X

        field, X = jax.lax.cond(active, slide,
                                lambda _: (gf, jnp.zeros((k, k), x.dtype)), None)
        return _Edge(field, lam, X)

    def vector_field(self, t, y, objective):
        return self.at(objective, y).field

    def predicted_loss(self, objective, params):
        """GD's predicted time-averaged loss at ``params`` on the central flow:
        ``L + tr(X)/lr``."""
        loss = objective.loss(params)
        return loss + jnp.trace(self.at(objective, params).X) / jnp.asarray(self.lr, loss.dtype)

    # -- the protocol ------------------------------------------------------------------
    def plan(self, ts, t1, *, n, dtype, members=None) -> Plan:
        """As :meth:`GradientFlow.plan`, with ``lr`` and ``edge_rate`` traced."""
        out = super().plan(ts, t1, n=n, dtype=dtype, members=members)
        dyn = eqx.tree_at(lambda d: (d.lr, d.edge_rate), out.dynamics,
                          (jnp.asarray(self.lr, dtype), jnp.asarray(self.edge_rate, dtype)))
        return out._replace(dynamics=dyn)

    def report(self, out, info):
        out = super().report(out, info)
        evals = out["stats"]["grad_evals"]
        if evals is not None:
            out["stats"]["hvp_evals"] = evals * self.iters
        return out


class _CentralLossFn(eqx.Module):
    flow: CentralFlow

    @property
    def __name__(self):
        return "central_loss"

    def __call__(self, params, ctx):
        return self.flow.predicted_loss(ctx.objective, params)


def CentralLoss(flow: CentralFlow) -> observe.Observable:
    """Observable ``central_loss``: :meth:`CentralFlow.predicted_loss` of ``flow`` (GD's
    predicted time-averaged loss ``L + tr(X)/lr``), a scalar; it repeats the flow's
    curvature work (``flow.iters`` HVPs and more) at every save. ``lr`` and ``edge_rate``
    are traced (held as arrays), so runs that differ only in them share one compiled
    program."""
    if not isinstance(flow, CentralFlow):
        raise ValueError(f"CentralLoss needs a gflow.CentralFlow, got {type(flow).__name__}.")
    dtype = jnp.result_type(float)
    flow = eqx.tree_at(lambda f: (f.lr, f.edge_rate), flow,
                       (jnp.asarray(flow.lr, dtype), jnp.asarray(flow.edge_rate, dtype)))
    return observe.Observable(_CentralLossFn(flow))
