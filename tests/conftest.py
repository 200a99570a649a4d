"""Shared fixtures: run a test in float32 and in float64 (``jax.enable_x64``)."""

import jax
import pytest


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    """Parametrize a test over float32 and float64; yields the dtype name."""
    with jax.enable_x64(request.param == "float64"):
        yield request.param


@pytest.fixture
def x64():
    """Run a test in float64."""
    with jax.enable_x64(True):
        yield
