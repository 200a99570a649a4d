"""The ODE limit of Adam on the gradient-flow time axis.

Adam with step ``lr``, ``beta1 = 1 - a lr``, ``beta2 = 1 - b lr`` and ``eps`` outside the root
(optax's ``adam``: ``m_k = beta1 m + (1 - beta1) g``, ``v_k = beta2 v + (1 - beta2) g^2``,
``theta_k = theta - lr mhat / (sqrt(vhat) + eps)`` with the bias corrections ``mhat = m_k /
(1 - beta1^k)``, ``vhat = v_k / (1 - beta2^k)``) is, at ``t = k lr``, explicit Euler for

    m' = a (g - m),    v' = b (g^2 - v),    theta' = -mhat / (sqrt(vhat) + eps),
    mhat = m / (1 - e^{-a t}),    vhat = v / (1 - e^{-b t}),    m(0) = v(0) = 0,

with ``g = grad L(theta)`` (``1 - beta^k = 1 - (1 - c lr)^{t/lr} -> 1 - e^{-c t}``). This is
the ODE of Barakat & Bianchi (SIAM J. Optim. 31, 2021, arXiv 1911.00289, eq. (ODE) with their
``h(t)`` bias corrections); as ``lr -> 0`` with ``a, b, eps`` fixed, Adam's iterates converge
to its solution at first order (:class:`AdamFlow`'s tests measure the slope). At ``t = 0`` the
corrected moments are ``0/0``; their limits are ``g`` and ``g^2`` and are used there, so the
flow starts with ``theta' = -g / (|g| + eps)``, as Adam's first step does.

RMSProp without bias correction (optax's ``rmsprop``, ``v_0 = 0``) has no such limit: its
first step moves ``theta`` by about ``sqrt(lr / b)``, not ``O(lr)``, so it is not offered.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from .flow import GradientFlow

__all__ = ["AdamFlow"]


class _OnParams(eqx.Module):
    """The objective seen from the flow's state ``(theta, m, v)``: loss and gradient of
    ``theta`` (what the stopping and divergence events evaluate)."""

    inner: Any

    def __getattr__(self, name):  # everything else (data, net, n, ...) is the objective's
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def loss(self, y):
        return self.inner.loss(y[0])

    def grad(self, y):
        return self.inner.grad(y[0])


class _Project(eqx.Module):
    """The observer seen from the flow's state: the observables of ``theta``."""

    observer: Any

    @property
    def observables(self):
        return self.observer.observables

    def __call__(self, y, ctx):
        return self.observer(y[0], ctx)


def _number(v, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
        raise ValueError(f"AdamFlow: {name} must be a number > 0, got {v!r}.")
    return float(v)


class AdamFlow(GradientFlow):
    """The ODE limit of Adam (module docstring), integrated by diffrax.

    Arguments:
        a: the first moment's rate, ``(1 - beta1) / lr``.
        b: the second moment's rate, ``(1 - beta2) / lr``.
        eps: Adam's ``eps`` (added to ``sqrt(vhat)``).
        **kwargs: the solver settings of :class:`gflow.GradientFlow` (``rtol``, ``atol``,
            ``solver``, ``controller``, ``dt0``, ``max_steps``); ``kinks=True`` is refused.

    :meth:`of` builds it from Adam's ``(lr, b1, b2, eps)``. The ODE's state is ``(theta, m,
    v)``; observables, stopping conditions, ``params_final`` and snapshots are of ``theta``.
    """

    a: float
    b: float
    eps: float

    def __init__(self, a, b, eps=1e-8, **kwargs):
        if kwargs.get("kinks"):
            raise ValueError("AdamFlow: kinks=True is not available; use kinks=False.")
        super().__init__(**kwargs)
        self.a, self.b = _number(a, "a"), _number(b, "b")
        self.eps = _number(eps, "eps")  # > 0: a coordinate with g = 0 throughout has 0 / eps

    @classmethod
    def of(cls, lr, b1=0.9, b2=0.999, eps=1e-8, **kwargs) -> AdamFlow:
        """The limit of ``optax.adam(lr, b1, b2, eps)``: ``a = (1 - b1) / lr``,
        ``b = (1 - b2) / lr``."""
        lr = _number(lr, "lr")
        for name, beta in (("b1", b1), ("b2", b2)):
            if isinstance(beta, bool) or not isinstance(beta, int | float) or not 0 <= beta < 1:
                raise ValueError(f"AdamFlow.of: {name} must be in [0, 1), got {beta!r}.")
        return cls((1 - b1) / lr, (1 - b2) / lr, eps, **kwargs)

    def describe(self) -> str:
        name = self.solver if isinstance(self.solver, str) else type(self.solver).__name__
        return (f"AdamFlow(a={self.a:g}, b={self.b:g}, eps={self.eps:g}, solver={name}, "
                f"rtol={self.rtol}, atol={self.atol})")

    def vector_field(self, t, y, objective):
        theta, m, v = y
        g = objective.inner.grad(theta)
        c1, c2 = -jnp.expm1(-self.a * t), -jnp.expm1(-self.b * t)
        start = t <= 0
        mhat = jax.tree.map(lambda mi, gi: jnp.where(start, gi, mi / jnp.where(start, 1, c1)),
                            m, g)
        vhat = jax.tree.map(lambda vi, gi: jnp.where(start, gi * gi,
                                                     vi / jnp.where(start, 1, c2)), v, g)
        dtheta = jax.tree.map(lambda mh, vh: -mh / (jnp.sqrt(jnp.maximum(vh, 0)) + self.eps),
                              mhat, vhat)
        dm = jax.tree.map(lambda mi, gi: self.a * (gi - mi), m, g)
        dv = jax.tree.map(lambda vi, gi: self.b * (gi * gi - vi), v, g)
        return dtheta, dm, dv

    # -- the protocol, on the state (theta, m, v) -----------------------------------------
    @staticmethod
    def _lift_objective(objective):
        """The objective as the vector field and the events see it (of the state)."""
        return _OnParams(objective)

    def _lift(self, problem):
        return dataclasses.replace(problem, objective=self._lift_objective(problem.objective),
                                   observer=_Project(problem.observer))

    def init(self, problem, params0):
        zeros = jax.tree.map(jnp.zeros_like, params0)
        return super().init(self._lift(problem), (params0, zeros, zeros))

    def advance(self, problem, state, until):
        return super().advance(self._lift(problem), state, until)

    def finish(self, problem, state):
        out = super().finish(self._lift(problem), state)
        out["params_final"] = out["params_final"][0]
        if out["params"] is not None:
            out["params"] = out["params"][0]
        return out
