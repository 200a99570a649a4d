"""The expected loss under a data distribution: the exact population objective and the
population observables.

:class:`DistributionObjective` is ``E_{(x, y) ~ P}[loss(f(x), y)]`` for a
:class:`gflow.distributions.Distribution` ``P`` whose population loss is exact (enumeration
of a finite support, or a closed form): the objective of ``gflow.simulate(net, p0, dist, ...)``,
so GD and gradient flow on a distribution are population GD / GF, their ``loss`` and
``grad_norm`` observables population quantities, and :func:`gflow.online.population_gradient`
its gradient. Observables (:data:`OBSERVABLES`, registered by ``import gflow``):

=====================  ======================================================================
``population_loss``    the exact population loss (data: a distribution, or a
                       :class:`gflow.population.Population`)
``population_error``   the exact classification error ``P(y f(x) <= 0)`` (data: a
                       distribution with labels in {-1, +1})
=====================  ======================================================================

On a sample (a distribution without an exact population loss), the estimates are the
``loss`` / ``accuracy`` of a large sample passed as data, or ``test_loss`` /
``test_accuracy`` of a test sample disjoint from the training sample
(:meth:`gflow.distributions.Distribution.dataset`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .losses import get_loss
from .nets import AbstractNet
from .objective import ExpectationObjective
from .observe import Observable

__all__ = ["OBSERVABLES", "DistributionObjective"]


class DistributionObjective(ExpectationObjective):
    """The population loss ``E[loss(f(x), y)]`` of ``net`` under ``distribution``, exact
    (:meth:`Distribution.population_loss`: enumeration or closed form), as an objective.
    It has no finite sample: ``n == 0``, ``y`` of shape (0,), reading ``X`` raises."""

    net: AbstractNet
    loss_fn: Callable = eqx.field(static=True)
    distribution: Any  # a gflow.distributions.Distribution

    def __init__(self, net, loss, distribution):
        if not isinstance(net, AbstractNet):
            raise ValueError(f"net must be a gflow.nets.AbstractNet, got {type(net).__name__}.")
        self.net, self.loss_fn, self.distribution = net, get_loss(loss), distribution

    @property
    def X(self):
        raise ValueError(
            f"the population objective of {type(self.distribution).__name__} has no training "
            "inputs X: it is an expectation. GradientFlow(kinks=True), simulate_ensemble and "
            "observables of the training set need a gflow.Dataset (e.g. a large sample "
            "gflow.Dataset(*dist.sample(key, n))); the population error is the observable "
            "'population_error'.")

    @property
    def y(self) -> Float[Array, " 0"]:
        return jnp.zeros((0,), jnp.result_type(float))

    def loss(self, params) -> Float[Array, ""]:
        return self.distribution.population_loss(self.net, params, self.loss_fn)


def _population_loss(p, c):
    if c.objective.n != 0:
        raise ValueError(
            "observable 'population_loss' needs an exact population objective: data= a "
            "gflow.distributions.Distribution (or gflow.population.Population). On a sample, "
            "observe 'loss' / 'test_loss' (e.g. of a held-out sample from Distribution.dataset).")
    return c.objective.loss(p)


def _population_error(p, c):
    dist = getattr(c.objective, "distribution", None)
    if dist is None:
        raise ValueError(
            "observable 'population_error' needs data= a gflow.distributions.Distribution; on "
            "a sample, observe 'accuracy' / 'test_accuracy' (e.g. of a held-out sample from "
            "Distribution.dataset).")
    return dist.population_error(c.objective.net, p)


#: observables of this module, registered in :mod:`gflow.observe` by ``import gflow``:
#: the exact population loss and classification error (``data=`` a distribution)
#: (``needs=("population",)``: they say so when the data is a sample)
OBSERVABLES = {"population_loss": Observable(_population_loss, needs=("population",)),
               "population_error": Observable(_population_error, needs=("population",))}
