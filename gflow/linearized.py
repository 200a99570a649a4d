"""The linearized (lazy-training) model of a net and its closed-form dynamics under the
squared loss.

The first-order Taylor model of a net around ``theta_0`` (Lee et al., NeurIPS 2019, arXiv
1902.06720, eq. 3)::

    f_lin(theta; x) = f(theta_0; x) + J(theta_0; x) (theta - theta_0),   J = df/dtheta,

is a net of its own (:class:`Linearized`), so it runs through :func:`gflow.simulate` with every
dynamics. Its output is linear in ``theta``, so gradient flow on gflow's squared loss
``L = (1/2n) sum_i (f(x_i) - y_i)^2`` moves the outputs by the linear ODE
``df/dt = -(1/n) Theta (f - y)`` with the empirical NTK ``Theta = J J^T`` at ``theta_0``
(fixed leaves, ``net.trainable`` False, are not in ``J``), whose solution is
(:func:`kernel_flow`; Lee et al. eqs. 8-9, with their ``eta`` absorbed into ``t`` and the
``1/n`` of the mean loss written out)::

    f_t(X)  = y + exp(-Theta t / n) (f_0(X) - y)
    f_t(X*) = f_0(X*) - Theta(X*, X) Theta^{-1} (I - exp(-Theta t / n)) (f_0(X) - y).

``Theta^{-1} (I - exp(-Theta t/n))`` is evaluated on the eigendecomposition as
``-expm1(-lambda t/n) / lambda`` (no cancellation for small ``lambda t``). A singular Gram
(``n > P``, duplicate inputs) is handled exactly: the outputs move only in the range of
``Theta``, and a null direction ``v`` of ``Theta = J J^T`` has ``J^T v = 0``, so
``Theta(X*, X) v = 0`` and it is dropped. The same formula with any kernel (e.g. the infinite-width
:func:`gflow.ntk.relu_ntk`, with ``f_0 = 0`` for a paired init) gives the kernel-regime
prediction of that kernel.

:func:`against_gradient_flow` puts the three side by side for one net: its gradient flow,
its linearization and a fixed kernel's flow, on the training and test inputs at the same
times (the lazy-vs-rich comparison of ``gflow run lazy_vs_rich``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .nets import AbstractNet
from .ntk import gram

__all__ = ["Linearized", "against_gradient_flow", "kernel_flow", "linearized_mse"]


class Linearized(AbstractNet):
    """``f_lin(theta; x) = f(theta_0; x) + J(theta_0; x)(theta - theta_0)`` for ``net`` at
    ``params0``, by one ``jax.jvp`` of ``net.apply`` (no Jacobian is formed).

    Parameters have the structure of ``net``'s; the trainable leaves, the prefactor and
    parameter checks are ``net``'s. An ensemble through :func:`gflow.simulate_ensemble` shares
    ``params0`` (it is a field of the net); members linearized around different points need
    one ``Linearized`` each.
    """

    net: AbstractNet
    params0: Any

    def __check_init__(self):
        if not isinstance(self.net, AbstractNet):
            raise ValueError(f"Linearized: net must be a gflow net (AbstractNet), got "
                             f"{type(self.net).__name__}.")
        if isinstance(self.net, Linearized):
            raise ValueError("Linearized: net is already linearized.")
        self.net.check_params(self.params0)

    def apply(self, params, X: Float[Array, "n d"]) -> Float[Array, " n"]:
        delta = jax.tree.map(jnp.subtract, params, self.params0)
        f0, df = jax.jvp(lambda p: self.net.apply(p, X), (self.params0,), (delta,))
        return f0 + df

    def trainable(self, params) -> Any:
        return self.net.trainable(params)

    def check_params(self, params, d: int | None = None) -> None:
        self.net.check_params(params, d)
        if jax.tree.structure(params) != jax.tree.structure(self.params0):
            raise ValueError("Linearized: params must have the structure of params0 "
                             f"({jax.tree.structure(self.params0)}), got "
                             f"{jax.tree.structure(params)}.")
        for x, x0 in zip(jax.tree.leaves(params), jax.tree.leaves(self.params0), strict=True):
            if jnp.shape(x) != jnp.shape(x0):
                raise ValueError(f"Linearized: a parameter of shape {jnp.shape(x)} where "
                                 f"params0 has {jnp.shape(x0)}.")

    @property
    def prefactor(self):
        return self.net.prefactor


def kernel_flow(K: Float[Array, "n n"], f0: Float[Array, " n"], y: Float[Array, " n"],
                ts, *, K_star: Float[Array, "p n"] | None = None,
                f0_star: Float[Array, " p"] | None = None, rcond: float | None = None):
    """Outputs of gradient flow on ``(1/2n) sum (f - y)^2`` for a model whose outputs move by
    the fixed kernel ``K`` (module docstring): ``(f_t on X (T, n), f_t on X* (T, p) or None)``
    at the times ``ts`` (T,).

    ``K_star`` (p, n) is the kernel between test and training inputs, ``f0_star`` (p,) the
    test outputs at ``t = 0``. Eigenvalues below ``rcond * lambda_max`` (default
    ``n * eps``) count as zero (their directions do not move).
    """
    K, f0, y = jnp.asarray(K), jnp.asarray(f0), jnp.asarray(y)
    n = y.shape[0]
    if K.shape != (n, n) or f0.shape != (n,):
        raise ValueError(f"K must be (n, n) and f0 (n,) for y of shape ({n},), got K "
                         f"{K.shape} and f0 {f0.shape}.")
    if (K_star is None) != (f0_star is None):
        raise ValueError("give both K_star and f0_star, or neither.")
    ts = jnp.asarray(np.asarray(ts, dtype=np.float64), K.dtype)
    lam, V = jnp.linalg.eigh(0.5 * (K + K.T))
    eps = jnp.finfo(K.dtype).eps
    tiny = (n * eps if rcond is None else rcond) * jnp.max(jnp.abs(lam))
    zero = lam <= tiny
    lam_safe = jnp.where(zero, 1.0, lam)
    r0 = V.T @ (f0 - y)  # the residual in the eigenbasis
    decay = jnp.exp(-jnp.where(zero, 0.0, lam)[None, :] * ts[:, None] / n)  # (T, n)
    f_train = y + (decay * r0) @ V.T
    if K_star is None:
        return f_train, None
    # Theta^{-1} (I - exp(-Theta t / n)) in the eigenbasis; t/n on zero eigenvalues
    # (a null direction v of a Gram J J^T has J^T v = 0, so K_star v = 0: it is dropped)
    g = jnp.where(zero, 0.0, -jnp.expm1(-lam[None, :] * ts[:, None] / n) / lam_safe)
    f_test = jnp.asarray(f0_star) - ((g * r0) @ V.T) @ jnp.asarray(K_star).T
    return f_train, f_test


def linearized_mse(net, params0, X: Float[Array, "n d"], y: Float[Array, " n"], ts,
                   X_test: Float[Array, "p d"] | None = None):
    """:func:`kernel_flow` with the empirical NTK of ``net`` at ``params0``: the exact outputs
    of gradient flow on the squared loss of ``Linearized(net, params0)`` at ``ts``, on ``X``
    (T, n) and, if given, ``X_test`` (T, p) (else ``None``)."""
    X = jnp.asarray(X)
    f0 = net.apply(params0, X)
    if X_test is None:
        return kernel_flow(gram(net, params0, X), f0, y, ts)
    X_test = jnp.asarray(X_test)
    return kernel_flow(gram(net, params0, X), f0, y, ts, K_star=gram(net, params0, X_test, X),
                       f0_star=net.apply(params0, X_test))


def against_gradient_flow(net, params0, data, ts, *, kernel=None, dynamics=None,
                          observe=("loss",)):
    """Gradient flow of ``net`` from ``params0`` on the squared loss of ``data`` (a
    :class:`gflow.Dataset` with test data), next to its linearization around ``params0``
    (:func:`linearized_mse`) and, if given, the flow of the fixed ``kernel = (K (n, n),
    K_star (p, n))`` (e.g. the infinite-width NTK) started from the net's own outputs at
    ``params0``.

    Args:
        net: a gflow net.
        params0: its parameters at ``t = 0``.
        data: training inputs (n, d) and test inputs (p, d) with targets.
        ts: save times (T,), the first 0.
        kernel: ``(K, K_star)`` or ``None``.
        dynamics: a gradient-flow dynamics (default ``gflow.GradientFlow()``).
        observe: observables of the gradient-flow run (``"output"`` is added).

    Returns:
        ``(traj, outputs)``: the gradient-flow :class:`gflow.Trajectory` and
        ``{"f_gf", "f_lin", "f_kernel"}``, each (T, n + p) on the training then the test
        inputs (``f_kernel`` ``None`` without ``kernel``).
    """
    from .simulate import simulate

    if data.X_test is None:
        raise ValueError("against_gradient_flow needs a dataset with test inputs (X_test).")
    n, ts = data.X.shape[0], np.asarray(ts, dtype=np.float64)
    if ts.ndim != 1 or ts[0] != 0:
        raise ValueError(f"ts must be 1-d save times starting at 0, got {ts!r}.")
    probes = jnp.concatenate([data.X, data.X_test])
    traj = simulate(net, params0, data, loss="squared", dynamics=dynamics, t1=float(ts[-1]),
                    save=ts, observe=tuple(dict.fromkeys((*observe, "output"))),
                    probes=probes)
    f_gf = np.asarray(traj["output"])
    lin = linearized_mse(net, params0, data.X, data.y, ts, X_test=data.X_test)
    out = {"f_gf": f_gf, "f_lin": np.concatenate([np.asarray(v) for v in lin], axis=1),
           "f_kernel": None}
    if kernel is not None:
        fk = kernel_flow(kernel[0], f_gf[0, :n], data.y, ts, K_star=kernel[1],
                         f0_star=f_gf[0, n:])
        out["f_kernel"] = np.concatenate([np.asarray(v) for v in fk], axis=1)
    return traj, out
