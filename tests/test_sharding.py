"""A two-layer net's neurons split over 4 (forced CPU) devices: the same results as on one
device (to rounding), and the gradient's only communication is an all-reduce of the n
partial outputs (and scalars). Run in a subprocess: the device count is fixed at start-up."""

import os
import subprocess
import sys
import textwrap

import jax
import pytest

import gflow

SCRIPT = textwrap.dedent('''
    import re
    import jax
    import jax.numpy as jnp
    import numpy as np
    import gflow
    from gflow.sharding import shard_neurons
    jax.config.update("jax_enable_x64", True)
    assert len(jax.devices()) == 4
    n = 24
    data = gflow.data.teacher(jax.random.key(0), n, 5)
    net = gflow.TwoLayer(64, activation="tanh", bias=True)
    p = gflow.init.gaussian(jax.random.key(1), net, 5)
    ps = shard_neurons(p)
    assert len(ps.W.sharding.device_set) == 4 and ps.W.addressable_shards[0].data.shape == (16, 5)
    for dyn, rtol in ((gflow.GD(0.1), 1e-12), (gflow.GradientFlow(rtol=1e-10, atol=1e-12), 1e-8)):
        a = gflow.simulate(net, p, data, dynamics=dyn, t1=5.0, observe=("loss", "grad_norm"))
        b = gflow.simulate(net, ps, data, dynamics=dyn, t1=5.0, observe=("loss", "grad_norm"))
        np.testing.assert_allclose(b["loss"], a["loss"], rtol=rtol)
        for x, y in zip(jax.tree.leaves(a.params_final), jax.tree.leaves(b.params_final)):
            np.testing.assert_allclose(y, x, rtol=rtol, atol=rtol)
    # the communication of one gradient evaluation
    obj = gflow.Objective(net, "squared", data.X, data.y)
    hlo = jax.jit(lambda o, q: o.value_and_grad(q)).lower(obj, ps).compile().as_text()
    sizes = []
    for line in hlo.splitlines():
        if re.search(r"\\ball-(reduce|gather|to-all)(-start)?\\(", line):
            kind = re.search(r"all-(reduce|gather|to-all)", line).group(0)
            dims = [int(v) for s in re.findall(r"f(?:32|64)\\[([0-9,]*)\\]", line.split("=")[1])
                    for v in s.split(",") if v]
            sizes.append((kind, int(np.prod(dims)) if dims else 1))
    assert sizes, "no collective in the sharded gradient"
    assert all(k == "all-reduce" for k, _ in sizes), sizes
    assert max(s for _, s in sizes) <= n, sizes
    print("OK", sizes)
''')


def test_neurons_over_four_devices():
    env = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", "")
               + " --xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "OK" in out.stdout


def test_bad_input():
    net = gflow.TwoLayer(6)
    p = gflow.init.gaussian(jax.random.key(0), net, 3)
    from gflow.sharding import neuron_mesh, shard_neurons

    devices = jax.devices()
    with pytest.raises(ValueError, match="multiple"):
        shard_neurons(p, devices=devices * 4)  # 6 neurons over 4 "devices"
    with pytest.raises(ValueError, match="width="):
        shard_neurons({"x": jax.numpy.ones(3)})
    with pytest.raises(ValueError, match="empty"):
        neuron_mesh([])
    one = shard_neurons(p)  # one device: a plain placement, values unchanged
    assert (one.W == p.W).all()
