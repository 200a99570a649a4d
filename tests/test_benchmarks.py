"""The benchmark runner's accelerator switch: size selection and its refusal on a CPU."""

import subprocess
import sys

import pytest

from benchmarks import _common


def test_sizes_follow_the_run_kind(monkeypatch):
    full, quick, device = {"n": 2}, {"n": 1}, {"n": 3}
    assert _common.sizes(full, quick, device, quick=False) is full
    assert _common.sizes(full, quick, device, quick=True) is quick
    monkeypatch.setattr(_common, "DEVICE_RUN", True)
    assert _common.sizes(full, quick, device, quick=False) is device
    assert _common.sizes(full, quick, device, quick=True) is quick  # --device --quick: smoke
    assert _common.sizes(full, quick, None, quick=False) is full  # a case without device sizes
    assert _common.torch_threads() is None  # no CPU peers against an accelerator


@pytest.mark.skipif(__import__("jax").default_backend() != "cpu", reason="needs a CPU-only JAX")
def test_device_run_is_refused_without_an_accelerator(tmp_path):
    res = subprocess.run([sys.executable, "-m", "benchmarks", "--device", "--quick",
                          "--out", str(tmp_path)], capture_output=True, text=True, check=False)
    assert res.returncode == 2
    assert "--device needs a GPU or TPU" in res.stderr and "docs/install.md" in res.stderr
    assert not any(tmp_path.iterdir())  # refused before anything ran or was written
