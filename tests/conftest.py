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


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop compiled programs after each test module. XLA:CPU maps memory for every
    executable it keeps; the whole suite in one process compiles thousands of programs and
    would otherwise reach the kernel's limit on memory maps (vm.max_map_count, 65530 by
    default), where compilation crashes."""
    yield
    from gflow.ensemble import _compiled

    _compiled.cache_clear()
    jax.clear_caches()
