"""The net, objective and data protocols; observables registered at ``import gflow``; the
import graph of the package (no cycles)."""

import ast
import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gflow
from gflow import population as P
from gflow.nets import AbstractNet
from gflow.objective import AbstractObjective, Objective


def _nets():
    d = 3
    tl = gflow.TwoLayer(4)
    p_tl = gflow.init.gaussian(jax.random.key(0), tl, d)
    mlp = gflow.MLP((4, 3))
    lr = gflow.LowRankTwoLayer(4, 2)
    no, p_no = gflow.init.norm_only(jax.random.key(1), 4, d)
    masked = gflow.nets.MaskedTwoLayer(tl, jnp.array([1.0, 1.0, 0.0, 1.0]))
    return [
        (tl, p_tl),
        (masked, p_tl),
        (mlp, gflow.init.gaussian(jax.random.key(2), mlp, d)),
        (lr, gflow.init.low_rank(jax.random.key(3), lr, d, "spectral")),
        (no, p_no),
    ]


def test_every_net_implements_the_protocol():
    X = jax.random.normal(jax.random.key(9), (5, 3))
    for net, p in _nets():
        assert isinstance(net, AbstractNet)
        net.check_params(p, d=3)
        with pytest.raises(ValueError, match="d=4"):
            net.check_params(p, d=4)
        assert net.apply(p, X).shape == (5,)
        assert jax.tree.structure(net.trainable(p)) == jax.tree.structure(p)
        assert float(jnp.max(jnp.asarray(net.prefactor))) > 0
    with pytest.raises(TypeError, match="abstract"):
        AbstractNet()


def test_fast_gradient_is_selected_by_the_protocol():
    # the objective asks the net for a written-out gradient (AbstractNet.loss_and_grad):
    # TwoLayer and MaskedTwoLayer give one, the others (default None) are differentiated
    X = jax.random.normal(jax.random.key(9), (5, 3))
    y = jnp.sin(X[:, 0])
    for net, p in _nets():
        fast = net.loss_and_grad(p, X, y, gflow.losses.squared)
        two_layer = type(net) in (gflow.TwoLayer, gflow.nets.MaskedTwoLayer)
        assert (fast is not None) == two_layer
        obj = Objective(net, "squared", X, y)
        val, g = obj.value_and_grad(p)
        auto_val, auto_g = jax.value_and_grad(obj.losses)(p)
        np.testing.assert_allclose(val, auto_val, rtol=1e-5)
        for u, v in zip(jax.tree.leaves(g), jax.tree.leaves(obj.mask_grad(p, auto_g)),
                        strict=True):
            np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-6)
    # a subclass of TwoLayer keeps the written-out gradient (no type(net) is TwoLayer test)

    class Wider(gflow.TwoLayer):
        pass

    net, p = Wider(4), _nets()[0][1]
    assert net.loss_and_grad(p, X, y, gflow.losses.squared) is not None
    with pytest.raises(ValueError, match="AbstractNet"):
        Objective(object(), "squared", X, y)


def test_population_objective_protocol(x64):
    data = gflow.data.gaussian_teacher(jax.random.key(0), 4, 5, 2, activation="relu")
    tnet, tp = data.meta["teacher"]
    pop = P.Population.of(data)
    assert isinstance(pop, gflow.data.AbstractData) and pop.d == 5 and not pop.has_test
    net = gflow.TwoLayer(4, "relu", "standard")
    p0 = gflow.init.near_teacher(jax.random.key(1), net, tnet, tp, angle_deg=20.0)
    obj = pop.objective(net, "squared")
    assert isinstance(obj, AbstractObjective) and obj.n == 0 and obj.y.shape == (0,)
    assert float(obj.loss(p0)) == pytest.approx(float(P.loss(net, p0, tnet, tp)), rel=1e-15)
    g = jax.grad(lambda q: P.loss(net, q, tnet, tp))(p0)
    for u, v in zip(jax.tree.leaves(obj.grad(p0)), jax.tree.leaves(g), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-14)
    with pytest.raises(ValueError, match="no training inputs"):
        obj.X  # noqa: B018
    with pytest.raises(ValueError, match="squared"):
        pop.objective(net, "logistic")
    # dynamics that need samples say so
    with pytest.raises(ValueError, match="n=0"):
        gflow.simulate(net, p0, pop, dynamics=gflow.SGD(0.1, 2, key=jax.random.key(0)), t1=1.0)
    with pytest.raises(ValueError, match="no training inputs"):
        gflow.simulate(net, p0, pop, dynamics=gflow.GD(0.1), t1=1.0, observe=("accuracy",))
    stacked = jax.tree.map(lambda x: jnp.stack([x, x]), p0)
    with pytest.raises(ValueError, match="no training inputs"):
        gflow.simulate_ensemble(net, stacked, pop, dynamics=gflow.GD(0.1), t1=1.0)
    # the output observable at probes works
    probes = jnp.eye(5)[:2]
    tr = gflow.simulate(net, p0, pop, dynamics=gflow.GD(0.1), t1=0.2, save=gflow.LinTimes(2),
                        observe=("loss", "output"), probes=probes)
    np.testing.assert_allclose(tr["output"][0], net.apply(p0, probes), rtol=1e-12)


def test_every_observable_works_right_after_import_gflow():
    # a fresh interpreter: research observables are registered by `import gflow` itself, not
    # by importing the module that defines them
    code = (
        "import gflow, jax, json\n"
        "net = gflow.TwoLayer(6, 'relu', bias=False)\n"
        "d = gflow.data.teacher(jax.random.key(0), 12, 3, 2, labels='sign')\n"
        "p = gflow.init.gaussian(jax.random.key(1), net, 3)\n"
        "names = sorted(gflow.observe.OBSERVABLES)\n"
        "tr = gflow.simulate(net, p, d, loss='logistic', dynamics=gflow.GD(0.1), t1=0.2,\n"
        "                    save=gflow.LinTimes(2), observe=tuple(n for n in names\n"
        "                    if not gflow.observe.OBSERVABLES[n].needs))\n"
        "print(json.dumps(names))\n"
    )
    root = pathlib.Path(gflow.__file__).parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=root, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin",
                                        "JAX_PLATFORMS": "cpu"}, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    names = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert {"orientations", "effective_neurons", "max_input_norm", "rotation_deg",
            "activation_flips", "ntk_lambda_min", "lojasiewicz_ratio"} <= names


def test_no_import_cycles():
    # the package's module graph (relative imports at module level) has no cycle
    pkg = pathlib.Path(gflow.__file__).parent
    graph = {}
    for f in pkg.rglob("*.py"):
        rel = f.relative_to(pkg.parent).with_suffix("")
        mod = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        deps = set()
        base = mod.split(".") if rel.name == "__init__" else mod.split(".")[:-1]
        for node in ast.parse(f.read_text()).body:  # module level only (lazy imports allowed)
            if isinstance(node, ast.ImportFrom) and node.level:
                parts = base[:len(base) - node.level + 1]
                target = ".".join(parts + ([node.module] if node.module else []))
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    deps.add(sub if (pkg.parent / (sub.replace(".", "/") + ".py")).exists()
                             else target)
        graph[mod] = deps - {mod}
    state = {}

    def visit(m, path):
        if state.get(m) == 1:
            raise AssertionError("import cycle: " + " -> ".join(path + [m]))
        if state.get(m) == 2 or m not in graph:
            return
        state[m] = 1
        for dep in sorted(graph[m]):
            if dep != "gflow":  # importing the package itself from a submodule
                visit(dep, path + [m])
        state[m] = 2

    for m in sorted(graph):
        if m != "gflow":
            visit(m, [])
