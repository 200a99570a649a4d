"""The stochastic modified equation (SME) of SGD, integrated by diffrax on SGD's time axis.

SGD with learning rate ``h`` and batches of ``B`` of the ``n`` samples, each step's batch
drawn independently without replacement (``gflow.SGD(..., sampling="step")``), takes steps
``theta_{k+1} = theta_k - h g_B(theta_k)`` whose noise ``g_B - grad L`` has mean 0 and
covariance ``(c_B / B) Sigma(theta)``, with ``c_B = (n - B)/(n - 1)`` (sampling without
replacement; 0 for full batches) and ``Sigma = (1/n) sum_i (g_i - g)(g_i - g)^T`` the
covariance of the per-sample gradients ``g_i = grad l_i``. Its weak approximation on the
time axis ``t = k h`` (Li, Tai & E, "Stochastic modified equations and adaptive stochastic
gradient algorithms", ICML 2017, and "... I: Mathematical foundations", JMLR 2019,
Theorems 1 and 2) is the Ito SDE::

    order 1:  d theta = -grad L dt                   + sqrt(h c_B / B) Sigma^(1/2) dW
    order 2:  d theta = -grad[L + (h/4)|grad L|^2] dt + sqrt(h c_B / B) Sigma^(1/2) dW

whose expectations of smooth test functions at a fixed time are within ``O(h)`` (order 1)
and ``O(h^2)`` (order 2) of SGD's. Order 2's drift is the modified flow of GD
(:func:`gflow.modified.modified_field`, one Hessian-vector product).

``Sigma^(1/2) dW`` is never formed: any ``G`` with ``G G^T = Sigma`` gives the same law, and
``G = [g_1 - g, ..., g_n - g] / sqrt(n)`` driven by an ``n``-dimensional Brownian motion
gives ``G dW = grad_theta [ sum_i (dW_i - mean(dW)) l_i(theta) ] / sqrt(n)``: one
vector-Jacobian product of the per-sample losses, no per-sample gradient materialised
(a ``lineax.FunctionLinearOperator`` in a ``diffrax.ControlTerm``). The Brownian motion is
a ``diffrax.VirtualBrownianTree`` on ``[0, t1]`` from ``key``: a step taken again (a
located stop) or a run resumed from a checkpoint sees the same path.

The solver is Euler-Maruyama (``diffrax.Euler``: Ito, weak order 1 in its step) with a
constant step ``lr / substeps``; the SME's own weak error is reached once the solver's,
``O(lr / substeps)``, is below it (for order 2: ``substeps`` growing like ``1 / lr``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np

from .discrete import check_key, check_lr
from .dynamics import Plan
from .flow import GradientFlow
from .modified import modified_field
from .objective import Objective

__all__ = ["SME"]


class SME(GradientFlow):
    """The stochastic modified equation of ``SGD(lr, batch_size, key, sampling="step")``
    (module docstring), integrated by Euler-Maruyama with step ``lr / substeps``.

    Arguments:
        lr: SGD's learning rate ``h`` (a number > 0): the noise scale and, for
            ``order=2``, the drift correction.
        batch_size: SGD's batch size ``B`` (at most the number of samples).
        key: PRNG key of the Brownian motion; in :func:`gflow.simulate_ensemble` an (M,)
            array of keys gives M independent paths.
        order: 1 (drift ``-grad L``) or 2 (drift ``-grad[L + (lr/4)|grad L|^2]``).
        substeps: Euler-Maruyama steps per SGD step (default 4).
        max_steps: the solve fails with a clear error beyond this many steps.

    Trains on a finite dataset (the per-sample losses define ``Sigma``); a population
    objective is refused. ``stats["grad_evals"]`` counts drift gradients and
    ``stats["vjp_evals"]`` the noise's vector-Jacobian products (one each per step).
    Stops (``stop_loss``, ``stop_grad``) are located on a step's linear interpolant.
    """

    lr: Any = None
    batch_size: int = eqx.field(static=True, default=1)
    key: Any = None
    order: int = eqx.field(static=True, default=1)
    substeps: int = eqx.field(static=True, default=4)

    member_fields: ClassVar[tuple[str, ...]] = ("key",)

    def __init__(self, lr, batch_size, key, order: int = 1, substeps: int = 4,
                 max_steps: int = 1_000_000):
        check_lr(lr, "SME")
        if callable(lr) or np.ndim(lr) != 0:
            raise ValueError(f"SME: lr must be a single number > 0, got {lr!r} (a schedule "
                             "has no single modified equation; run one SME per lr).")
        if isinstance(substeps, bool) or not isinstance(substeps, int) or substeps < 1:
            raise ValueError(f"SME: substeps must be an integer >= 1, got {substeps!r}.")
        super().__init__(solver="euler", controller="constant", dt0=float(lr) / substeps,
                         max_steps=max_steps)
        self.lr, self.batch_size, self.key = lr, batch_size, key
        self.order, self.substeps = order, substeps

    def __check_init__(self):
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) \
                or self.batch_size < 1:
            raise ValueError(f"SME: batch_size must be an integer >= 1, got {self.batch_size!r}.")
        check_key(self.key, "SME", "SME(lr, batch_size, key=jax.random.key(0))")
        if isinstance(self.order, bool) or self.order not in (1, 2):
            raise ValueError(f"SME: order must be 1 or 2, got {self.order!r}.")

    @property
    def kind(self) -> str:
        return "sme"

    def describe(self) -> str:
        return (f"SME(lr={self.lr}, batch_size={self.batch_size}, order={self.order}, "
                f"substeps={self.substeps})")

    def vector_field(self, t, y, objective):
        """The drift: ``-grad L`` (order 1) or GD's order-2 modified field."""
        if self.order == 1:
            return jax.tree.map(jnp.negative, objective.grad(y))
        grad = lambda p: objective.mask_grad(p, jax.grad(objective.loss)(p))  # noqa: E731
        return modified_field(grad, y, self.lr, 2)

    def noise_scale(self, n: int):
        """``sqrt(lr c_B / (B n))``: the factor of the per-sample-loss VJP in ``G dW``."""
        c = (n - self.batch_size) / (n - 1) if n > 1 else 0.0
        return jnp.sqrt(self.lr * c / (self.batch_size * n))

    def diffusion(self, t, y, objective):
        """``G(y)`` as a linear operator from the ``n``-dimensional Brownian increment to
        the parameters (module docstring)."""
        X, labels, n = objective.X, objective.y, objective.n
        scale = self.noise_scale(n)
        _, vjp = jax.vjp(lambda p: objective.loss_fn(objective.net.apply(p, X), labels), y)

        def mv(dw):
            g = vjp((dw - jnp.mean(dw)).astype(labels.dtype))[0]
            return jax.tree.map(lambda x: scale * x, objective.mask_grad(y, g))

        return lx.FunctionLinearOperator(mv, jax.ShapeDtypeStruct((n,), labels.dtype))

    def term(self, problem) -> diffrax.AbstractTerm:
        objective = problem.objective
        if not isinstance(objective, Objective):
            raise ValueError("SME: needs a finite dataset (its per-sample losses define the "
                             f"noise), got a {type(objective).__name__}; for online SGD on "
                             "a distribution there is no finite-sample covariance.")
        path = diffrax.VirtualBrownianTree(
            0.0, problem.t1, tol=self.dt0 / 2, shape=(objective.n,), key=self.key)
        return diffrax.MultiTerm(diffrax.ODETerm(self.vector_field),
                                 diffrax.ControlTerm(self.diffusion, path))

    def plan(self, ts, t1, *, n, dtype, members=None) -> Plan:
        """As :meth:`GradientFlow.plan`, with ``lr`` traced; refuses ``batch_size > n``."""
        if self.batch_size > n:
            raise ValueError(f"SME: batch_size={self.batch_size} exceeds the number of "
                             f"samples n={n}.")
        out = super().plan(ts, t1, n=n, dtype=dtype, members=members)
        return out._replace(dynamics=eqx.tree_at(lambda d: d.lr, out.dynamics,
                                                 jnp.asarray(self.lr, dtype)))

    def report(self, out, info):
        out = super().report(out, info)
        steps = out["stats"]["num_steps"]
        out["stats"]["grad_evals"] = steps
        out["stats"]["vjp_evals"] = steps
        if self.order == 2:
            out["stats"]["hvp_evals"] = steps
        return out
