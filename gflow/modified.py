"""Modified-equation flows of gradient descent (backward error analysis of explicit Euler).

GD with step ``h`` is explicit Euler for ``theta' = f(theta) = -g(theta)``, ``g = grad L``.
Backward error analysis (Hairer, Lubich & Wanner, *Geometric Numerical Integration*, 2nd ed.,
IX.1) gives the vector field whose exact flow at time ``h`` is one GD step, as a series in
``h``; :class:`ModifiedFlow` integrates its truncation after ``order`` terms::

    order 1:  theta' = -g                                          (gradient flow)
    order 2:  theta' = -g - (h/2) H g  =  -grad[L + (h/4) |g|^2]
    order 3:  theta' = -g - (h/2) H g - h^2 [ (1/3) H^2 g + (1/12) D^3L(g, g) ]

with ``H = D^2 L`` and ``D^3L(g, g)`` the third derivative contracted twice with ``g``. Order 2
is the "implicit gradient regularization" flow of Barrett & Dherin (ICLR 2021, arXiv
2009.11162). Order 3 follows from matching the exact flow ``phi_h = 1 + h f~ + h^2/2 f~'f~ +
h^3/6 (f~''(f~, f~) + f~'f~'f~) + ...`` of ``f~ = f + h f_2 + h^2 f_3`` with the Euler step
``1 + h f``: ``f_2 = -f'f/2`` and ``f_3 = f'f'f/3 + f''(f, f)/12`` (HLW IX.1, Example 1.2),
which with ``f = -g`` is the line above. On ``L = theta^T A theta / 2`` GD is exactly the flow
of ``log(I - h A) theta / h = -(A + h A^2/2 + h^2 A^3/3 + ...) theta``, whose truncations these
are; the global error of order ``p`` against GD at a fixed time is ``O(h^p)``.

Heavy-ball momentum (:class:`gflow.Momentum`, ``v_{k+1} = beta v_k + g``, ``theta_{k+1} =
theta_k - h v_{k+1}``, ``v_0 = 0``; a two-step method for the same ``f``) has, with ``beta``::

    order 1:  theta' = -g / (1 - beta)
    order 2:  theta' = -g / (1 - beta) - h (1 + beta) / (2 (1 - beta)^3) H g
                     = -grad[L + h (1 + beta) / (4 (1 - beta)^2) |g|^2] / (1 - beta)

from theta(0) = theta_0 + h beta / (1 - beta)^2 g(theta_0) at order 2: the flow of the
method's principal root, whose ``h`` term (that of ``f'f``, the only elementary differential
at this order, so fixed by the linear test equation ``f = -a theta``: the root of ``r^2 - (1
+ beta - h a) r + beta = 0`` near 1 is ``1 - h a / c - h^2 a^2 beta / c^3 + O(h^3)``, ``c = 1
- beta``, and ``log(r) / h = -a / c - h a^2 (1 + beta) / (2 c^3) + O(h^2)``), with the
starting value of that root's component (starting from rest leaves the iterates behind the
flow by ``h beta / c^2 g``: ``theta_k = (1 + h beta a / c^2 + O(h^2)) r^k theta_0 + O(beta^k)``
on the test equation). The regularizer is ``(1 + beta) / (1 - beta)`` times GD's at the
effective step ``h / (1 - beta)``, as Ghosh, Lyu, Zhang & Wang (ICLR 2023, arXiv 2302.00849)
state for heavy-ball momentum; ``beta = 0`` is GD's modified flow. The third order is not
derived for ``beta > 0`` and is refused.

Hessian-vector products come from ``jax.linearize`` of the autodiff gradient (forward over
reverse; no Hessian is formed): order 2 costs one HVP per
evaluation of the vector field, order 3 two HVPs and one second directional derivative of
the gradient. For piecewise-linear activations (relu, abs) ``H`` and ``D^3L`` are taken on
the smooth pieces (the derivative of the activation's step is 0 away from a kink, and the
delta terms on kink surfaces are dropped), so the corrections are those of the current
activation pattern; the kink-aware solve is refused.
"""

from __future__ import annotations

from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .discrete import check_lr
from .dynamics import Plan
from .flow import GradientFlow

__all__ = ["ModifiedFlow", "modified_field"]

#: Hessian-class passes (HVPs, counting the second directional derivative as one) per
#: evaluation of the vector field of each order
_HVPS = {1: 0, 2: 1, 3: 3}


def _axpy(a, x, y):
    return jax.tree.map(lambda xi, yi: a * xi + yi, x, y)


def modified_field(grad, params, lr, order: int, beta=0.0):
    """The modified vector field of GD (``beta = 0``) or heavy-ball momentum with step ``lr``
    truncated after ``order`` (1, 2, 3; 3 only for GD) terms (module docstring), at
    ``params``, for a gradient function ``grad``."""
    c = 1.0 - beta
    if order == 1:
        return jax.tree.map(lambda x: -x / c, grad(params))
    g, hvp = jax.linearize(grad, params)
    hg = hvp(g)
    out = _axpy(0.5 * lr * (1.0 + beta) / c**2, hg, g)  # g + h (1 + beta) / (2 c^2) H g
    if order == 3:
        hhg = hvp(hg)
        # D^3L(g, g): the derivative of p -> H(p) g along g, with g held fixed
        d3 = jax.jvp(lambda p: jax.jvp(grad, (p,), (g,))[1], (params,), (g,))[1]
        corr = _axpy(1 / 3, hhg, jax.tree.map(lambda x: x / 12, d3))
        out = _axpy(lr * lr, corr, out)
    return jax.tree.map(lambda x: -x / c, out)


class ModifiedFlow(GradientFlow):
    """The modified equation of GD (or of heavy-ball momentum, ``beta > 0``) with step
    ``lr``, truncated after ``order`` terms, integrated by diffrax on the discrete method's
    time axis ``t = k * lr`` (module docstring for the fields).

    Arguments:
        lr: the step (a number > 0; in :func:`gflow.simulate_ensemble` and sweeps it may
            differ per member).
        order: 1 (gradient flow; with ``beta``, sped up by ``1 / (1 - beta)``), 2 (Barrett &
            Dherin's implicit gradient regularization; with ``beta``, Ghosh et al.'s) or 3
            (GD only).
        beta: the momentum of :class:`gflow.Momentum` whose iterates the flow follows (0:
            GD). At order 2 with ``beta > 0`` the flow starts from ``theta_0 + lr beta / (1 -
            beta)^2 grad L(theta_0)``, where the iterates' slow mode starts (the trajectory's
            first save is there; ``params0`` stays ``theta_0``).
        **kwargs: the solver settings of :class:`gflow.GradientFlow` (``rtol``, ``atol``,
            ``solver``, ``controller``, ``dt0``, ``max_steps``); ``kinks=True`` is refused.

    ``stats["grad_evals"]`` counts evaluations of the vector field (one gradient each) and
    ``stats["hvp_evals"]`` the Hessian-vector products they took.
    """

    lr: Any = None
    order: int = eqx.field(static=True, default=2)
    beta: float = eqx.field(static=True, default=0.0)

    member_fields: ClassVar[tuple[str, ...]] = ("lr",)

    def __init__(self, lr, order: int = 2, beta: float = 0.0, **kwargs):
        if kwargs.get("kinks"):
            raise ValueError("ModifiedFlow: kinks=True is not available (the corrections need "
                             "the Hessian, which is a distribution on the kink surfaces); "
                             "use kinks=False.")
        super().__init__(**kwargs)
        self.lr, self.order, self.beta = lr, order, beta

    def __check_init__(self):
        check_lr(self.lr, "ModifiedFlow")
        if callable(self.lr):
            raise ValueError("ModifiedFlow: lr must be a number (a schedule has no single "
                             "modified equation).")
        if isinstance(self.order, bool) or self.order not in _HVPS:
            raise ValueError(f"ModifiedFlow: order must be 1, 2 or 3, got {self.order!r}.")
        if isinstance(self.beta, bool) or not isinstance(self.beta, int | float) \
                or not 0 <= self.beta < 1:
            raise ValueError(f"ModifiedFlow: beta must be a number in [0, 1) (Momentum's), "
                             f"got {self.beta!r}.")
        if self.beta and self.order == 3:
            raise ValueError("ModifiedFlow: order 3 is derived for GD only (beta=0); use "
                             "order 1 or 2 with momentum.")

    def describe(self) -> str:
        name = self.solver if isinstance(self.solver, str) else type(self.solver).__name__
        beta = f", beta={self.beta}" if self.beta else ""
        return (f"ModifiedFlow(lr={self.lr}, order={self.order}{beta}, solver={name}, "
                f"rtol={self.rtol}, atol={self.atol})")

    def vector_field(self, t, y, objective):
        if self.order == 1:
            return modified_field(objective.grad, y, self.lr, 1, self.beta)
        # the autodiff gradient (fixed leaves masked): linearisable everywhere, where the
        # written-out gradient of an ensemble member is a custom batching rule
        grad = lambda p: objective.mask_grad(p, jax.grad(objective.loss)(p))  # noqa: E731
        return modified_field(grad, y, self.lr, self.order, self.beta)

    def init(self, problem, params0):
        """As :meth:`GradientFlow.init`; with momentum at order 2, from the slow mode's
        starting point (class docstring)."""
        if self.beta and self.order == 2:
            shift = self.lr * self.beta / (1.0 - self.beta) ** 2
            params0 = _axpy(shift, problem.objective.grad(params0), params0)
        return super().init(problem, params0)

    def plan(self, ts, t1, *, n, dtype, members=None) -> Plan:
        """As :meth:`GradientFlow.plan`, with ``lr`` traced too ((M,) per member)."""
        lr = np.asarray(self.lr, np.float64)
        if lr.ndim == 1 and (members is None or lr.shape != (members,)):
            raise ValueError(f"ModifiedFlow: per-member lr of shape {lr.shape} needs an "
                             f"ensemble of {lr.shape[0]} members.")
        out = super().plan(ts, t1, n=n, dtype=dtype, members=members)
        return out._replace(dynamics=eqx.tree_at(lambda d: d.lr, out.dynamics,
                                                 jnp.asarray(lr, dtype)))

    def report(self, out, info):
        out = super().report(out, info)
        evals = out["stats"]["grad_evals"]
        if evals is not None:
            out["stats"]["hvp_evals"] = evals * _HVPS[self.order]
        return out
