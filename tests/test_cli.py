import json
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

from gflow import cli, experiments

SMALL = ["--set", "n=40", "--set", "width=16", "--set", "t1=20", "--set", "n_save=12"]


def test_run_quickstart_writes_results(tmp_path, capsys):
    out = tmp_path / "qs"
    assert cli.main(["run", "quickstart", "--out", str(out), "--quiet", *SMALL]) == 0
    for f in ("config.json", "summary.json", "trajectory.nc", "loss.png", "weight_movement.png"):
        assert (out / f).exists(), f
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left
    summary = json.loads((out / "summary.json").read_text())
    # paired init: f = 0 exactly in exact arithmetic; in float32 the width-16 sum is 0 up to
    # (m - 1) eps sum_j |t_j| ~ 1e-5 for O(1) terms, 0.0 where XLA adds the pairs symmetrically
    assert 0.0 <= summary["init_output_max_abs_paired"] < 1e-4
    assert summary["status_gf_gaussian"] == "completed"
    config = json.loads((out / "config.json").read_text())
    assert config["settings"]["width"] == 16 and config["settings"]["seed"] == 0
    ds = xr.open_dataset(out / "trajectory.nc", engine="h5netcdf")
    assert set(ds["dynamics"].values) == {"gf", "gd", "sgd"}
    assert ds["loss"].dims == ("init", "dynamics", "time")
    loss = ds["loss"].values
    assert np.all(np.isfinite(loss)) and np.all(loss[..., -1] < loss[..., 0])
    # GD at lr=0.1 tracks GF closely on this time axis (both saved at the same times)
    assert summary["gd_gf_max_rel_loss_gap_gaussian"] < 0.05
    ds.close()
    (out / "loss.png").unlink()
    assert cli.main(["plot", str(out)]) == 0 and (out / "loss.png").exists()


def test_seed_changes_result(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    cli.main(["run", "quickstart", "--out", str(a), "--quiet", *SMALL])
    cli.main(["run", "quickstart", "--out", str(b), "--quiet", *SMALL, "--set", "seed=3"])
    sa = json.loads((a / "summary.json").read_text())
    sb = json.loads((b / "summary.json").read_text())
    assert sa["final_loss_gf_gaussian"] != sb["final_loss_gf_gaussian"]


def test_list_shows_settings(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "quickstart" in out and "seed = 0" in out and "width = 256" in out


@pytest.mark.parametrize("args, match", [
    (["run", "nope"], "unknown experiment"),
    (["run", "quickstart", "--set", "widht=3"], "valid settings"),
    (["run", "quickstart", "--set", "width=abc"], "expected a int"),
    (["run", "quickstart", "--set", "width"], "key=value"),
])
def test_bad_cli_input(args, match, capsys, tmp_path):
    assert cli.main([*args, "--out", str(tmp_path)] if args[1] != "nope" else args) == 2
    assert match in capsys.readouterr().err


def test_console_script_x64(tmp_path):
    out = tmp_path / "x"
    r = subprocess.run([sys.executable, "-m", "gflow.cli", "run", "quickstart", "--x64",
                        "--quiet", "--out", str(out), *SMALL], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ds = xr.open_dataset(out / "trajectory.nc", engine="h5netcdf")
    assert ds["loss"].dtype == np.float64
    ds.close()


def test_every_experiment_has_seed_and_api():
    for name in experiments.names():
        mod = experiments.get(name)
        assert "seed" in mod.Config.__dataclass_fields__, name
        assert callable(mod.run) and callable(mod.figures), name


def test_cli_sweep_seeds_and_list_settings(tmp_path):
    out = tmp_path / "sw"
    assert cli.main(["run", "quickstart", "--out", str(out), "--quiet", "--seeds", "2",
                     "--set", "width=8,16", "--set", "n=40", "--set", "t1=5",
                     "--set", "n_save=6"]) == 0
    ds = xr.open_dataset(out / "trajectory.nc", engine="h5netcdf")
    assert ds["loss"].dims[:2] == ("seed", "width") and ds["loss"].shape[:2] == (2, 2)
    assert list(ds["seed"].values) == [0, 1] and list(ds["width"].values) == [8, 16]
    # the width-8 points have no neurons 8..15: NaN-padded, not zero
    w = ds["params0_W"].sel(seed=0, width=8).values
    assert np.all(np.isnan(w[..., 8:, :])) and np.all(np.isfinite(w[..., :8, :]))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sweep"] == {"seed": [0, 1], "width": [8, 16]}
    assert np.shape(summary["final_loss_gf_gaussian"]) == (2, 2)
    assert not (out / "parts").exists()
    ds.close()
    assert cli.main(["plot", str(out)]) == 0
    assert (out / "loss_seed1_width16.png").exists()
