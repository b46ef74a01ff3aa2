"""--config FILE / --set KEY=VALUE on distill, denoise, baseline, experts; the saved config repeats a run."""
import json
import os

import pytest

from jaxdistill import cli
from jaxdistill.baseline import get_baseline_config
from jaxdistill.config_files import apply_mapping, load_config_file, parse_sets, resolve
from jaxdistill.errors import ConfigError


def test_json_py_and_sets_resolve_nested_fields(tmp_path):
    base = get_baseline_config("digits", "quick")
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"width": 8, "train": {"epochs": 2, "milestones": [0.25, 0.5]}}))
    py = tmp_path / "c.py"
    # an ml_collections-style object: anything with to_dict()
    py.write_text("class C(dict):\n    def to_dict(self):\n        return dict(self)\n"
                  "def get_config():\n    return C(k=1, train={'lr': 0.5})\n")
    got = resolve(base, str(j), ["train.batch_size=16", "k=2"])
    assert (got.width, got.k, got.train.epochs, got.train.batch_size) == (8, 2, 2, 16)
    assert got.train.milestones == (0.25, 0.5) and got.train.lr == base.train.lr
    got = resolve(base, str(py), None)
    assert (got.k, got.train.lr, got.width) == (1, 0.5, base.width)
    assert parse_sets(["a=1", "b.c=x", "d=[1, 2]", "e=null"]) == {"a": 1, "b": {"c": "x"}, "d": [1, 2], "e": None}


def test_errors_name_the_bad_value(tmp_path):
    base = get_baseline_config("digits", "quick")
    with pytest.raises(ConfigError, match=r"key 'widht' does not exist; known keys: \['k', 'memorise', 'train', 'width'\]"):
        apply_mapping(base, {"widht": 3}, "baseline config")
    with pytest.raises(ConfigError, match="train.*'epoch' does not exist"):
        resolve(base, None, ["train.epoch=3"])
    with pytest.raises(ConfigError, match="must look like key=value"):
        parse_sets(["width"])
    (tmp_path / "c.yaml").write_text("a: 1")
    with pytest.raises(ConfigError, match=r"'\.yaml' is not one of \['\.json', '\.py'\]"):
        load_config_file(str(tmp_path / "c.yaml"))
    (tmp_path / "n.py").write_text("x = 1\n")
    with pytest.raises(ConfigError, match="defines no get_config"):
        load_config_file(str(tmp_path / "n.py"))
    with pytest.raises(ConfigError, match="no such file"):
        load_config_file(str(tmp_path / "missing.json"))


def test_baseline_round_trip_repeats_the_run(tmp_path, capsys):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    flags = ["--dataset", "digits", "--subset", "200", "--noise", "symmetric:0.2"]
    assert cli.main(["baseline", *flags, "--val-fraction", "0", "--set", "k=1", "--set", "width=4",
                     "--set", "train.epochs=2", "--out", a]) == 0
    saved = json.load(open(os.path.join(a, "config.json")))
    assert saved["k"] == 1 and saved["width"] == 4 and saved["train"]["epochs"] == 2
    # The saved file alone brings back every field (the flags that built it are not repeated).
    assert cli.main(["baseline", *flags, "--val-fraction", "0", "--config", os.path.join(a, "config.json"),
                     "--out", b]) == 0
    assert json.load(open(os.path.join(b, "config.json"))) == saved
    ra, rb = (json.load(open(os.path.join(d, "results.json")))["results"]["baseline_last"]["accs"] for d in (a, b))
    assert ra == rb
    from jaxdistill.runlog import read_metrics

    rows = read_metrics(b, "baseline_noisy")  # the baseline command keeps its curve in its --out
    assert [r["step"] for r in rows if "loss" in r] == [1, 2] and any("test_acc" in r for r in rows)


@pytest.mark.parametrize("command", ["distill", "experts", "denoise"])
def test_round_trip_of_the_resolved_config(tmp_path, monkeypatch, command):
    """The config each command resolves from --set is saved; --config of that file resolves to the same."""
    import jaxdistill.methods as mb
    import jaxdistill.methods.datm as datm
    import jaxdistill.pipeline as pl

    class Stop(Exception):
        pass

    seen = []

    def capture(*a, **k):
        cfg = next(x for x in a if hasattr(x, "__dataclass_fields__") and not hasattr(x, "x_train"))
        seen.append(cfg)
        if command == "denoise":  # run_denoise is what writes config.json for denoise
            os.makedirs(a[1], exist_ok=True)
            pl._config_guard(a[1], cfg)
        raise Stop

    monkeypatch.setattr(mb, "distill", capture)
    monkeypatch.setattr(datm, "build_experts", capture)
    monkeypatch.setattr(pl, "run_denoise", capture)
    data = ["--dataset", "digits", "--subset", "200"]
    extra = {"distill": ["--method", "rcig", "--ipc", "1", "--set", "iterations=3", "--set", "kernel_backend=jax"],
             "experts": ["--ipc", "1", "--set", "num_experts=2", "--set", "expert_lr=0.02"],
             "denoise": ["--methods", "rcig", "--ipc", "1", "--set", "k=2", "--set",
                         'overrides={"rcig": {"iterations": 2}}']}[command]
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    which = ["--method", "rcig"] if command == "distill" else []  # the method is a flag, not a config field
    for args in ([command, *data, *extra, "--out", a],
                 [command, *data, *which, "--config", os.path.join(a, "config.json"), "--out", b]):
        with pytest.raises(Stop):
            cli.main(args)
    assert seen[0] == seen[1]
    assert json.load(open(os.path.join(a, "config.json"))) == json.load(open(os.path.join(b, "config.json")))
