"""Experiment settings: one typed mechanism checks every Config, in Python, from ``--set``
and from config files, with the same messages naming the experiment and the setting."""

import dataclasses

import pytest

from gflow import cli, experiments
from gflow.experiments import condensation, coupled_init, lowrank_init, quickstart


def test_every_experiment_config_is_typed_and_its_defaults_pass():
    for name in experiments.names():
        cls = experiments.get(name).Config
        assert issubclass(cls, experiments.Settings), name
        experiments.check_config(cls())  # the defaults satisfy the declared rules


@pytest.mark.parametrize("make, words", [
    # bad type
    (lambda: quickstart.Config(width="abc"), ["quickstart: width='abc': expected a int"]),
    (lambda: quickstart.Config(width=2.5), ["quickstart: width=2.5: expected a int"]),
    (lambda: quickstart.Config(t1="1e3"), ["quickstart: t1='1e3': expected a float"]),
    (lambda: condensation.Config(hidden=50), ["condensation: hidden=50: expected a list"]),
    # out of range, declared per setting
    (lambda: condensation.Config(stop_drop=1.5),
     ["condensation: stop_drop=1.5: must be > 0 and < 1"]),
    (lambda: condensation.Config(seeds=0), ["condensation: seeds=0: must be >= 1"]),
    (lambda: coupled_init.Config(widths=(3, 4)),
     ["coupled_init: widths=(3, 4): each value must be a multiple of 2", "even"]),
    (lambda: lowrank_init.Config(rank=(0, 1)), ["lowrank_init: rank=(0, 1): each value", ">= 1"]),
    # bounds that name another setting report its value
    (lambda: quickstart.Config(batch_size=50, n=40),
     ["quickstart: batch_size=50: must be >= 1 and <= n=40"]),
    (lambda: lowrank_init.Config(train_rank=9, train_width=8),
     ["lowrank_init: train_rank=9", "train_width=8", "64 features"]),
    # choices, also of each value of a tuple
    (lambda: condensation.Config(activation="nope"), ["condensation: activation='nope'",
                                                      "must be one of", "'tanh'"]),
    (lambda: condensation.Config(dynamics=("gf", "sgd")),
     ["condensation: dynamics=('gf', 'sgd'): each value must be one of ['gf', 'adam', 'gd']"]),
    # generic rules: finite floats, int64 integers, non-empty lists
    (lambda: quickstart.Config(t1=float("nan")), ["quickstart: t1=nan: must be a finite"]),
    (lambda: quickstart.Config(width=2**70), ["quickstart: width=", "out of range"]),
    (lambda: coupled_init.Config(ns=()), ["coupled_init: ns=(): needs at least one value"]),
    # unknown keys, through the constructor and through dataclasses.replace
    (lambda: quickstart.Config(widht=3), ["quickstart: unknown setting(s) ['widht']",
                                          "valid settings", "'width'"]),
    (lambda: dataclasses.replace(quickstart.Config(), nope=1), ["['nope']", "valid settings"]),
])
def test_bad_settings_in_python_name_the_experiment_and_setting(make, words):
    with pytest.raises(ValueError) as e:
        make()
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_values_are_converted_to_the_declared_types():
    cfg = quickstart.Config(t1=5, width=8)
    assert type(cfg.t1) is float and cfg.t1 == 5.0
    cfg = coupled_init.Config(widths=[2, 4], angles=[1, 0.5])
    assert cfg.widths == (2, 4) and cfg.angles == (1.0, 0.5)
    assert all(type(a) is float for a in cfg.angles)
    with pytest.raises(ValueError, match="expected a int"):
        quickstart.Config(width=True)  # a bool is not an integer setting


@pytest.mark.parametrize("cls, sets", [
    (condensation.Config, ["stop_drop=1.5"]),
    (quickstart.Config, ["batch_size=50", "n=40"]),
    (coupled_init.Config, ["widths=3,4"]),
    (condensation.Config, ["dynamics=gf,sgd"]),
])
def test_set_gives_the_same_message_as_python(cls, sets):
    with pytest.raises(ValueError) as from_text:
        experiments.parse_sets(cls, sets)
    kwargs = {}
    for s in sets:
        key, raw = s.split("=")
        kwargs[key] = experiments.from_text(cls, key, raw)
    with pytest.raises(ValueError) as from_python:
        cls(**kwargs)
    assert str(from_text.value) == str(from_python.value)


def test_set_and_config_files_reject_bad_text():
    with pytest.raises(ValueError, match="quickstart: width='abc': expected a int"):
        experiments.parse_sets(quickstart.Config, ["width=abc"])
    with pytest.raises(ValueError, match=r"quickstart: unknown setting\(s\) \['widht'\]; valid"):
        experiments.parse_sets(quickstart.Config, ["widht=3"])
    with pytest.raises(ValueError, match=r"quickstart: unknown setting\(s\) \['widht'\]"):
        experiments.config_from_dict(quickstart.Config, {"widht": 3})
    with pytest.raises(ValueError, match="condensation: stop_drop=2.0: must be"):
        experiments.config_from_dict(condensation.Config, {"stop_drop": 2})


def test_a_sweep_checks_every_point():
    # the first point is valid; a later one breaks batch_size <= n
    with pytest.raises(ValueError, match="batch_size=32: must be >= 1 and <= n=20"):
        experiments.grid(quickstart.Config, ["n=200,20"])
    # the base config is built with the first value of each swept setting: a sweep whose
    # every point is valid passes even though the defaults (n=200) would not fit batch 300
    axes, cfgs = experiments.grid(quickstart.Config, ["n=400,300", "batch_size=300"])
    assert axes == {"n": [400, 300]} and [c.n for c in cfgs] == [400, 300]


@pytest.mark.parametrize("sets, words", [
    (["stop_drop=1.5"], ["gflow: error: condensation: stop_drop=1.5: must be > 0 and < 1"]),
    (["nope=1"], ["gflow: error: condensation: unknown setting(s) ['nope']", "valid settings"]),
    (["seeds=two"], ["gflow: error: condensation: seeds='two': expected a int"]),
])
def test_cli_reports_bad_settings_before_writing(tmp_path, capsys, sets, words):
    out = tmp_path / "o"
    args = ["run", "condensation", "--out", str(out), *(x for s in sets for x in ("--set", s))]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    for w in words:
        assert w in err, (w, err)
    assert not out.exists()


def test_every_setting_is_documented_and_every_run_time_measured():
    # `gflow describe` shows each setting's meaning from its Config's docstring
    for name in experiments.names():
        mod = experiments.get(name)
        fields = {f.name for f in dataclasses.fields(mod.Config)}
        docs = experiments.setting_docs(mod.Config)
        assert set(docs) == fields, (name, fields ^ set(docs))
        assert all(len(text) > 5 for text in docs.values()), name
        assert isinstance(mod.RUN_TIME, str) and any(c.isdigit() for c in mod.RUN_TIME), name


def test_setting_docs_reads_google_style_attributes():
    class Config:
        """Head.

        Attributes:
            a: first line
                continued here.
            b_2: second.

        Notes:
            c: not a setting.
        """

    assert experiments.setting_docs(Config) == {"a": "first line continued here.",
                                                "b_2": "second."}

    class Bare:
        pass

    assert experiments.setting_docs(Bare) == {}


def test_describe_prints_meanings_constraints_and_run_time(capsys):
    assert cli.main(["describe", "quickstart"]) == 0
    out = capsys.readouterr().out
    assert "batch_size = 32  (>= 1, <= n)" in out and "SGD's minibatch size" in out
    assert f"Typical run time of the defaults: {quickstart.RUN_TIME}" in out
    assert out.count(" = ") >= len(dataclasses.fields(quickstart.Config))
    assert cli.main(["describe", "nope"]) == 2
    assert "unknown experiment 'nope'" in capsys.readouterr().err


def test_with_preset_fills_only_defaults():
    base = lowrank_init.Config()
    full = {"seeds": base.seeds + 3, "d": (4, 8)}
    got = lowrank_init.Config(d=(16,)).with_preset(full)
    assert got.seeds == base.seeds + 3 and got.d == (16,)  # the explicit d is kept
    with pytest.raises(ValueError, match="seeds"):  # a preset value is checked like any other
        lowrank_init.Config().with_preset({"seeds": 0})


def test_with_preset_by_name_applies_only_to_that_preset():
    full = {"seeds": lowrank_init.Config().seeds + 3}
    assert lowrank_init.Config().with_preset(full, "full") == lowrank_init.Config()
    got = lowrank_init.Config(preset="full").with_preset(full, "full")
    assert got.seeds == full["seeds"]
