"""A stand-in for the quickstart experiment: cheap and deterministic, no compile, so that
tests of the results folder (not of the numerics) run in milliseconds.

``FAKE`` is source code that replaces ``quickstart.run`` / ``quickstart.figures`` when
executed (``exec(FAKE, {})`` in a test that restores them with ``monkeypatch``);
``DRIVER`` runs the real CLI with it in a subprocess (``python -c DRIVER ARGS``).
"""

FAKE = """
import time
import numpy as np
import xarray as xr
from gflow.experiments import Result, quickstart
SLOW = False
def fake_run(cfg, *, progress=False):
    if SLOW and cfg.seed > 0:
        time.sleep(20)
    x = np.random.default_rng(cfg.seed).standard_normal(cfg.n_save) * cfg.width
    return Result({"final": float(x[-1]), "status_gf": "completed"},
                  {"gf": xr.Dataset({"loss": (("time",), x)})})
quickstart.run = fake_run
quickstart.figures = lambda ds, cfg: {}
"""
DRIVER = FAKE + """
import sys
from gflow import cli
SLOW = True
sys.exit(cli.main(sys.argv[1:]))
"""


def install(monkeypatch, figures: bool = False) -> None:
    """Replace quickstart's ``run`` (and ``figures``: one tiny figure if ``figures``) for
    the rest of the test."""
    from gflow.experiments import quickstart

    monkeypatch.setattr(quickstart, "run", quickstart.run)
    monkeypatch.setattr(quickstart, "figures", quickstart.figures)
    exec(FAKE, {})
    if figures:
        def draw(ds, cfg):
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(1, 1))
            ax.plot(ds["gf"]["loss"].values)
            return {"loss": fig}

        monkeypatch.setattr(quickstart, "figures", draw)
