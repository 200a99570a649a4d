"""gflow.CentralFlow: the complementarity solver against its KKT conditions and a closed form,
the flow against a toy whose central flow is known in closed form (one and two eigenvalues at
the edge), and gradient flow before the edge."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gflow
from gflow.central_flow import CentralLoss, solve_sdcp


class ToyParams(eqx.Module):
    x: jax.Array  # (2,)
    z: jax.Array  # (3,): Z = [[z0, z2], [z2, z1]]


class Toy(gflow.AbstractNet):
    """``L(x, Z) = x^T Z x / 2 - <B, Z>`` (the loss ``(f, y) -> f`` on one sample): at
    ``x = 0`` the Hessian's top block is ``Z``, gradient flow keeps ``x = 0`` and moves
    ``Z' = B`` (progressive sharpening at a constant rate). On ``{x = 0}`` the central flow
    is ``Z' = B - X`` in the basis of ``Z`` (``grad_Z <Sigma, H> = Sigma``), so once every
    eigenvalue is held at ``2/lr``, ``Sigma = 2 B`` and the predicted loss ``L + tr(X)/lr``
    is ``-(2/lr) tr B + 2 tr B / lr = 0``."""

    Bv: jax.Array  # (B_00, B_11, B_01)

    @property
    def prefactor(self):
        return 1.0

    def apply(self, p, X):
        Z = jnp.array([[p.z[0], p.z[2]], [p.z[2], p.z[1]]])
        f = 0.5 * p.x @ Z @ p.x - (self.Bv[0] * p.z[0] + self.Bv[1] * p.z[1]
                                    + 2 * self.Bv[2] * p.z[2])
        return jnp.full((X.shape[0],), f)

    def trainable(self, p):
        return ToyParams(True, True)

    def check_params(self, p, d=None):
        pass


def _toy(Bv, z0):
    dtype = jnp.result_type(float)
    net = Toy(jnp.asarray(Bv, dtype))
    ds = gflow.Dataset(jnp.zeros((1, 1), dtype), jnp.zeros(1, dtype))
    return net, ds, ToyParams(jnp.zeros(2, dtype), jnp.asarray(z0, dtype))


def _identity_loss(f, y):
    return f


def test_sdcp_kkt(dtype):
    """Random PSD maps B (Gram tensors of k^2 vectors, as the flow's) and symmetric A with
    negative eigenvalues: the solution is PSD, A + B[X] is PSD and <X, A + B[X]> = 0, to
    1e-9 (f64) / 1e-4 (f32) relative to |A|; k = 1 is the closed form max(0, -a/b)."""
    rng = np.random.default_rng(0)
    tol = 1e-9 if dtype == "float64" else 1e-4
    for k in (2, 3):
        for trial in range(3):
            J = rng.normal(size=(k, k, 6 * k))
            J = 0.5 * (J + J.transpose(1, 0, 2))
            B = 0.5 * np.einsum("ijn,kln->ijkl", J, J)
            A = rng.normal(size=(k, k))
            A = 0.5 * (A + A.T) - (trial + 0.5) * np.eye(k)
            X = np.asarray(jax.jit(solve_sdcp)(jnp.asarray(A, dtype), jnp.asarray(B, dtype)),
                           np.float64)
            M = A + np.einsum("ijkl,kl->ij", B, X)
            scale = np.abs(A).max()
            assert np.linalg.eigvalsh(X)[0] >= -tol * scale
            assert np.linalg.eigvalsh(M)[0] >= -tol * scale
            assert abs(np.sum(X * M)) <= tol * scale * max(1.0, np.abs(X).max())
    X1 = solve_sdcp(jnp.array([[-3.0]]), jnp.array([[[[1.5]]]]))
    np.testing.assert_allclose(X1, [[2.0]], rtol=1e-6)


@pytest.fixture(scope="module")
def one_edge():
    """The toy with B = diag(1, 0.2), Z0 = diag(1, 0.5), lr = 1 (edge 2): only Z_00 reaches
    the edge before t1 = 3. Central flow and gradient flow on the same saves, float64."""
    with jax.enable_x64(True):
        net, ds, p0 = _toy([1.0, 0.2, 0.0], [1.0, 0.5, 0.0])
        ts = np.linspace(0.0, 3.0, 31)
        kw = dict(loss=_identity_loss, t1=3.0, save=ts, observe=("loss",), save_params=True)
        cf = gflow.CentralFlow(1.0, k=1, iters=5, rtol=1e-10, atol=1e-12)
        c = gflow.simulate(net, p0, ds, dynamics=cf, **kw)
        g = gflow.simulate(net, p0, ds, dynamics=gflow.GradientFlow(rtol=1e-10, atol=1e-12),
                           **kw)
        return ts, c, g


def test_one_edge_closed_form(one_edge):
    """With kappa = 4/lr the flow is gradient flow (Z_00 = 1 + t) until kappa (2 - Z_00) =
    B_00, i.e. Z_00 = 1.75 at t_s = 0.75, then slides with Z_00' = kappa (2 - Z_00):
    Z_00 = 2 - e^{-4 (t - t_s)} / 4. Matched to 1e-8 (solve at rtol 1e-10; the kink at t_s
    costs the adaptive steps a little accuracy); x stays 0 and Z_11 = 0.5 + 0.2 t."""
    ts, c, _ = one_edge
    t_s = 0.75
    want = np.where(ts <= t_s, 1 + ts, 2 - 0.25 * np.exp(-4 * (ts - t_s)))
    z = np.asarray(c.params.z)
    np.testing.assert_allclose(z[:, 0], want, atol=1e-8)
    np.testing.assert_allclose(z[:, 1], 0.5 + 0.2 * ts, atol=1e-8)
    np.testing.assert_allclose(np.asarray(c.params.x), 0.0, atol=1e-15)  # rounding only
    assert c.stats["hvp_evals"] == 5 * c.stats["grad_evals"]


def test_gradient_flow_before_the_edge(one_edge):
    """Before the flow first slides (t_s = 0.75) every save is gradient flow's: the same
    steps of the same field, equal to rounding (1 ulp measured: the two programs compile
    the same arithmetic differently)."""
    ts, c, g = one_edge
    before = ts < 0.7
    for a, b in ((c.params.z, g.params.z), (c["loss"], g["loss"])):
        np.testing.assert_allclose(np.asarray(a)[before], np.asarray(b)[before], rtol=1e-15,
                                   atol=1e-15)
    assert np.asarray(g.params.z)[-1, 0] > 3.9  # gradient flow itself runs through the edge


def test_two_edges_at_the_end_state(x64):
    """At Z = (2/lr) I, x = 0 with B = [[1, 0.3], [0.3, 0.8]] both eigenvalues are at the
    edge and the SDCP's solution is Sigma = 2B (X has its eigenvalues in any eigenbasis of
    the degenerate Z), the field vanishes and the predicted loss is 0, to 1e-10."""
    Bv = [1.0, 0.8, 0.3]
    lr = 0.5
    net, ds, _ = _toy(Bv, [0.0, 0.0, 0.0])
    p = ToyParams(jnp.zeros(2), jnp.array([2 / lr, 2 / lr, 0.0]))
    obj = gflow.Objective(net, _identity_loss, ds.X, ds.y)
    cf = gflow.CentralFlow(lr, k=2, iters=5)
    e = eqx.filter_jit(cf.at)(obj, p)
    twoB = 2 * np.array([[Bv[0], Bv[2]], [Bv[2], Bv[1]]])
    np.testing.assert_allclose(np.linalg.eigvalsh(np.asarray(e.X)), np.linalg.eigvalsh(twoB),
                               rtol=1e-10)
    np.testing.assert_allclose(np.asarray(e.eigs), [2 / lr, 2 / lr], rtol=1e-12)
    np.testing.assert_allclose(np.asarray(e.field.z), 0.0, atol=1e-10)
    assert abs(float(eqx.filter_jit(cf.predicted_loss)(obj, p))) < 1e-10


@pytest.mark.slow  # ~35 s (compiles a k = 2 flow); test_two_edges_at_the_end_state checks
# the two-eigenvalue SDCP at its fixed point in the default suite
def test_two_edges_flow_converges(x64):
    """The whole k = 2 flow from Z0 = diag(1, 0.5): both eigenvalues end at the edge (2 within
    1e-6 at t = 6, below it + 1e-9 throughout) and the predicted loss tends to 0."""
    net, ds, p0 = _toy([1.0, 0.8, 0.3], [1.0, 0.5, 0.0])
    cf = gflow.CentralFlow(1.0, k=2, iters=5, rtol=1e-10, atol=1e-12)
    tr = gflow.simulate(net, p0, ds, loss=_identity_loss, dynamics=cf, t1=6.0,
                        save=np.linspace(0, 6, 25),
                        observe=("loss", gflow.curvature.TopEigs(2, 5), CentralLoss(cf)))
    eigs = np.asarray(tr["top_eigs"])
    assert eigs.max() <= 2 + 1e-9
    np.testing.assert_allclose(eigs[-1], [2.0, 2.0], atol=1e-6)
    assert abs(np.asarray(tr["central_loss"])[-1]) < 1e-5


def test_central_loss_traces_lr(x64, caplog):
    """CentralLoss holds lr and edge_rate as arrays: a second lr reuses the compiled solve
    (no 'solve' program compiled again) and gives that lr's predicted loss. Under gradient
    flow the toy reaches x = 0, Z = diag(2, 0.7) at t = 1 (L = -2.14, S = 2, C = <grad S,
    grad L> = -1, G/2 = 1/2), so X = -2 (kappa (2/lr - 2) + C) and the predicted loss is
    -2.14 + X/lr: 1.508 at lr = 1.25 (kappa = 3.2), 0.86 at lr = 2 (kappa = 2), to 1e-9."""
    net, ds, p0 = _toy([1.0, 0.2, 0.0], [1.0, 0.5, 0.0])
    kw = dict(loss=_identity_loss, t1=1.0, save=np.array([0.0, 1.0]),
              dynamics=gflow.GradientFlow(rtol=1e-10, atol=1e-12))

    def run(lr):
        tr = gflow.simulate(net, p0, ds, observe=(CentralLoss(gflow.CentralFlow(lr, iters=5)),),
                            **kw)
        return float(np.asarray(tr["central_loss"])[-1])

    a = run(1.25)
    with jax.log_compiles(True), caplog.at_level("WARNING"):
        b = run(2.0)
    compiled = [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]
    assert not any("solve" in m for m in compiled), compiled
    assert a == pytest.approx(1.508, abs=1e-9)
    assert b == pytest.approx(0.86, abs=1e-9)
