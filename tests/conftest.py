"""Shared fixtures: run a test in float32 and in float64 (``jax.enable_x64``).

The suite compiles thousands of small XLA programs and runs each only a few times, so most
of its time is XLA:CPU's backend compilation. LLVM's optimisation passes are switched off for
the tests (``XLA_FLAGS``, set before the backend starts and inherited by the CLI tests'
subprocesses): that cuts the suite's CPU time by about a third. Fast math stays off either way;
results can differ from an optimised build in the last bits (e.g. where LLVM would fuse a
multiply-add), which no test's tolerance depends on, and the bitwise tests compare two gflow
runs compiled alike. Benchmarks and users' runs keep XLA's defaults.
"""

import os

_FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FAST_COMPILE}".strip()

import jax  # noqa: E402
import pytest  # noqa: E402


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
