"""Bad inputs through the CLI (`jaxdistill.cli.main([...])` returns 2, one clear message on stderr) and the
library (the project's own error types), plus reproducible noise from the CLI and 'nothing computed is lost'.

Every case here fails before any training starts, so the file is fast; the one expert store it needs is
built once per module with a 1-expert, 1-epoch, width-8 recipe.
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

from jaxdistill import cli
from jaxdistill.errors import ConfigError, DataError, JaxDistillError, NoiseError, StoreError


def _cli(capsys, *argv: str) -> tuple[int, str]:
    rc = cli.main(list(argv))
    return rc, capsys.readouterr().err


def _fails(capsys, *argv: str, match: list[str]) -> str:
    """main(argv) returns 2 and stderr is one `jaxdistill CMD: error: ...` line holding every string in `match`."""
    rc, err = _cli(capsys, *argv)
    assert rc == 2, err
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"jaxdistill {argv[0]}: error: "), err
    for m in match:
        assert m in err, f"{m!r} not in {err!r}"
    return err


def _argparse_fails(capsys, *argv: str, match: list[str]) -> None:
    """Choice options are checked by argparse: exit status 2, the bad value and the allowed ones named."""
    with pytest.raises(SystemExit) as e:
        cli.main(list(argv))
    assert e.value.code == 2
    err = capsys.readouterr().err
    for m in match:
        assert m in err, f"{m!r} not in {err!r}"


@pytest.fixture
def labels_file(tmp_path):
    y = np.repeat(np.arange(10), 30)
    path = tmp_path / "labels.npy"
    np.save(path, y)
    return str(path), y


# ------------------------------------------------------------------------------------------------
# noise specs and rates
# ------------------------------------------------------------------------------------------------

def test_unknown_noise_kind(capsys, labels_file, tmp_path):
    _fails(capsys, "noise", "--labels", labels_file[0], "--noise", "gaussian:0.3",
           match=["'gaussian'", "allowed kinds", "symmetric", "pairflip"])


@pytest.mark.parametrize("spec,bad", [("symmetric:1.5", "'1.5'"), ("symmetric:-0.1", "'-0.1'"),
                                      ("pairflip:abc", "'abc'"), ("instance:nan", "'nan'"),
                                      ("asymmetric:1", "'1'")])
def test_bad_noise_rate(capsys, labels_file, spec, bad):
    _fails(capsys, "noise", "--labels", labels_file[0], "--noise", spec, match=[bad, "[0, 1)"])


@pytest.mark.parametrize("spec,match", [("symmetric", "missing its argument"), ("clean:0.2", "takes no argument"),
                                        ("natural:", "missing its argument"), ("matrix:/no/such.npy", "does not exist")])
def test_malformed_noise_spec(capsys, labels_file, spec, match):
    _fails(capsys, "noise", "--labels", labels_file[0], "--noise", spec, match=[match])


def test_asymmetric_noise_without_a_class_map(capsys, labels_file):
    _fails(capsys, "noise", "--labels", labels_file[0], "--noise", "asymmetric:0.2", "--dataset", "svhn",
           match=["'svhn'", "cifar10", "digits"])


def test_noise_labels_out_of_range(capsys, labels_file):
    # labels 0..9 but --classes 5
    _fails(capsys, "noise", "--labels", labels_file[0], "--noise", "symmetric:0.2", "--classes", "5",
           match=["outside [0, 5)"])


def test_noise_labels_not_integers(capsys, tmp_path):
    p = tmp_path / "f.npy"
    np.save(p, np.array([0.5, 1.0, 2.0]))
    _fails(capsys, "noise", "--labels", str(p), "--noise", "symmetric:0.2", "--classes", "3",
           match=["integer dtype", "float64"])


def test_noise_labels_unreadable(capsys, tmp_path):
    p = tmp_path / "f.npy"
    p.write_text("not a numpy file")
    _fails(capsys, "noise", "--labels", str(p), "--noise", "symmetric:0.2", match=[str(p), ".npy of integer"])


# ------------------------------------------------------------------------------------------------
# unknown names: dataset, method, protocol, preset, config key
# ------------------------------------------------------------------------------------------------

def test_unknown_dataset(capsys, tmp_path):
    _fails(capsys, "distill", "--dataset", "mnist_typo", "--method", "datm", "--out", str(tmp_path / "o"),
           match=["'mnist_typo'", "allowed", "digits", "fashion_mnist", "npz:PATH"])
    from jaxdistill.data import load_dataset

    with pytest.raises(DataError, match="unknown dataset 'mnist_typo'"):
        load_dataset("mnist_typo")


def test_unknown_method(capsys, tmp_path):
    _fails(capsys, "distill", "--dataset", "digits", "--subset", "200", "--method", "mtt", "--out",
           str(tmp_path / "o"), match=["'mtt'", "datm", "dance", "rcig"])
    from jaxdistill.pipeline import DenoiseConfig, run_denoise

    with pytest.raises(ConfigError, match="unknown method 'mtt'"):
        run_denoise(DenoiseConfig(dataset="digits", methods=("mtt",)), str(tmp_path / "d"))
    # refused before anything was written
    assert not os.path.exists(tmp_path / "d" / "config.json")


def test_unknown_protocol(capsys, tmp_path):
    _argparse_fails(capsys, "evaluate", "--distilled", "x.npz", "--protocol", "kip",
                    match=["invalid choice: 'kip'", "standard", "rcig"])
    _argparse_fails(capsys, "denoise", "--protocols", "kip", match=["invalid choice: 'kip'", "own"])
    from jaxdistill.evaluate import get_protocol
    from jaxdistill.pipeline import DenoiseConfig

    with pytest.raises(ConfigError, match="unknown evaluation protocol 'kip'.*standard"):
        get_protocol("kip", num_images=10, num_classes=10, image_size=8)
    with pytest.raises(ConfigError, match="protocol 'kip'.*'standard', 'own'"):
        DenoiseConfig(protocols=("kip",))


def test_unknown_preset(capsys, tmp_path):
    _argparse_fails(capsys, "distill", "--method", "datm", "--preset", "fast", "--out", str(tmp_path),
                    match=["invalid choice: 'fast'", "quick", "paper"])
    from jaxdistill.methods import get_config
    from jaxdistill.pipeline import DenoiseConfig

    for m in ("datm", "dance", "rcig"):
        with pytest.raises(ConfigError, match="'fast'.*quick"):
            get_config(m, "digits", 1, "fast")
    with pytest.raises(ConfigError, match="preset='fast'"):
        DenoiseConfig(preset="fast")


def test_paper_setting_that_does_not_exist(capsys, tmp_path):
    _fails(capsys, "distill", "--dataset", "digits", "--subset", "200", "--method", "datm", "--preset", "paper",
           "--ipc", "7", "--out", str(tmp_path / "o"), match=["ipc=7", "known settings", "digits/ipc10"])


def test_unknown_config_key(capsys, tmp_path):
    _fails(capsys, "distill", "--dataset", "digits", "--subset", "200", "--method", "datm", "--set",
           "nosuchkey=1", "--out", str(tmp_path / "o"), match=["'nosuchkey'", "known keys", "syn_steps"])
    _fails(capsys, "distill", "--dataset", "digits", "--subset", "200", "--method", "dance", "--set",
           "iterations", "--out", str(tmp_path / "o"), match=["'iterations'", "key=value"])


def test_config_value_out_of_range(capsys, tmp_path):
    _fails(capsys, "distill", "--dataset", "digits", "--subset", "200", "--method", "rcig", "--set",
           "ema_decay=1.5", "--out", str(tmp_path / "o"), match=["ema_decay=1.5", "[0, 1)"])


# ------------------------------------------------------------------------------------------------
# IPC larger than the smallest class; classes emptied by noise
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["datm", "dance", "rcig"])
def test_ipc_larger_than_smallest_class(capsys, tmp_path, method):
    # 200 stratified digits: ~20 per class
    err = _fails(capsys, "distill", "--dataset", "digits", "--subset", "200", "--noise", "clean", "--method",
                 method, "--ipc", "50", "--eval", "none", "--out", str(tmp_path / "o"),
                 match=["ipc=50", "allowed ipc <="])
    assert "class 0:" in err


def test_class_emptied_by_noise(capsys, tmp_path):
    """A transition matrix that sends every 0 to 1 leaves class 0 without noisy labels: ipc=1 is refused."""
    T = np.eye(10)
    T[0] = 0.0
    T[0, 1] = 1.0
    path = tmp_path / "T.npy"
    np.save(path, T)
    _fails(capsys, "distill", "--dataset", "digits", "--subset", "200", "--noise", f"matrix:{path}", "--method",
           "rcig", "--ipc", "1", "--eval", "none", "--out", str(tmp_path / "o"),
           match=["ipc=1", "class 0: 0", "allowed ipc <= 0"])
    # the same through the library
    from jaxdistill.data import check_ipc, load_dataset, make_noisy_data

    nd = make_noisy_data(load_dataset("digits"), f"matrix:{path}", subset=200)
    assert (nd.y_noisy == 0).sum() == 0
    with pytest.raises(DataError, match="class 0: 0"):
        check_ipc(nd.y_noisy, 10, 1)


# ------------------------------------------------------------------------------------------------
# user npz data: shapes, dtypes, NaNs, labels out of range
# ------------------------------------------------------------------------------------------------

def _good(n=40):
    rs = np.random.RandomState(0)
    return dict(x=rs.rand(n, 6, 6, 1).astype(np.float32), y=np.arange(n) % 4)


NPZ_CASES = {
    "nan_pixels": (lambda d: d["x"].__setitem__((3, 2, 2, 0), np.nan) or d, ["'x'", "NaN/inf", "finite floats"]),
    "pixels_above_one": (lambda d: dict(d, x=d["x"] * 255), ["'x'", "allowed float in [0,1]"]),
    "images_2d": (lambda d: dict(d, x=d["x"].reshape(40, 36)), ["'x'", "(40, 36)", "allowed (N,H,W) or (N,H,W,C)"]),
    "images_int64": (lambda d: dict(d, x=(d["x"] * 255).astype(np.int64)), ["int64", "allowed uint8"]),
    "labels_length": (lambda d: dict(d, y=d["y"][:-1]), ["'y'", "(39,)", "expected (40,)"]),
    "labels_2d": (lambda d: dict(d, y=d["y"].reshape(40, 1)), ["'y'", "(40, 1)"]),
    "labels_fractional": (lambda d: dict(d, y=d["y"] + 0.5), ["non-integer label 0.5", "allowed integers >= 0"]),
    "labels_negative": (lambda d: dict(d, y=d["y"] - 1), ["negative label -1", "allowed integers >= 0"]),
    "labels_strings": (lambda d: dict(d, y=d["y"].astype(str)), ["'y'", "<U", "allowed integer class ids"]),
    "label_beyond_class_names": (lambda d: dict(d, class_names=np.array(["a", "b", "c"])),
                                 ["'class_names'", ">= 4 names"]),
    "missing_y": (lambda d: {"x": d["x"]}, ["missing key 'y'", "required 'x', 'y'"]),
    "x_test_without_y_test": (lambda d: dict(d, x_test=d["x"][:5]), ["'x_test' given without 'y_test'"]),
    "test_images_other_shape": (lambda d: dict(d, x_test=np.zeros((5, 7, 7, 1), np.float32), y_test=np.zeros(5, int)),
                                ["'x_test'", "(7, 7, 1)", "(6, 6, 1)"]),
    "no_images": (lambda d: dict(d, x=np.zeros((0, 6, 6, 1), np.float32), y=np.zeros(0, int)),
                  ["(0, 6, 6, 1)", "at least one non-empty image"]),
}


@pytest.mark.parametrize("case", sorted(NPZ_CASES))
def test_bad_npz(capsys, tmp_path, case):
    make, match = NPZ_CASES[case]
    path = tmp_path / "mine.npz"
    np.savez(path, **make(_good()))
    _fails(capsys, "distill", "--dataset", f"npz:{path}", "--method", "dance", "--out", str(tmp_path / "o"),
           match=[str(path), *match])
    from jaxdistill.data import load_dataset

    with pytest.raises(DataError):
        load_dataset(f"npz:{path}")


def test_npz_with_pickled_objects_and_missing_file(capsys, tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, x=np.array([object()] * 3, dtype=object), y=np.zeros(3, int))
    _fails(capsys, "distill", "--dataset", f"npz:{path}", "--method", "dance", "--out", str(tmp_path / "o"),
           match=["without pickle", "np.savez(path, x=..., y=...)"])
    _fails(capsys, "distill", "--dataset", f"npz:{tmp_path}/none.npz", "--method", "dance", "--out",
           str(tmp_path / "o"), match=["none.npz", "no such file"])


def test_good_npz_loads(tmp_path):
    """The control: the unmodified file loads (so each bad case above fails for its own reason)."""
    from jaxdistill.data import load_dataset

    path = tmp_path / "mine.npz"
    np.savez(path, **_good())
    ds = load_dataset(f"npz:{path}")
    assert ds.num_classes == 4 and ds.x_train.shape[0] + ds.x_test.shape[0] == 40
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32


# ------------------------------------------------------------------------------------------------
# an expert store made for other data
# ------------------------------------------------------------------------------------------------

TINY_DATM = ["--set", "width=8", "--set", "depth=1", "--set", "num_experts=1", "--set", "sequential=false",
             "--set", "max_start_epoch=1", "--set", "current_max_start_epoch=1", "--set", "expert_epochs=1",
             "--set", "expert_train_epochs=1", "--set", "expert_batch=64", "--set", "batch_syn=10"]


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    """A finished 1-expert store for digits (200 images, symmetric:0.2, seed 0)."""
    import jax

    from jaxdistill.cli import _overrides
    from jaxdistill.data import load_dataset, make_noisy_data
    from jaxdistill.methods import get_config
    from jaxdistill.methods.datm import build_experts

    data = make_noisy_data(load_dataset("digits"), "symmetric:0.2", seed=0, subset=200)
    cfg = _overrides(get_config("datm", "digits", 1, "quick"), TINY_DATM[1::2])
    d = str(tmp_path_factory.mktemp("store"))
    build_experts(cfg, data, jax.random.PRNGKey(0), d, progress=False)
    return d


def _snapshot(directory: str) -> dict:
    out = {}
    for root, _, files in os.walk(directory):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, directory)] = fh.read()
    return out


@pytest.mark.parametrize("noise,seed", [("symmetric:0.4", "0"), ("symmetric:0.2", "1")])
def test_expert_store_made_for_other_data(capsys, tmp_path, tiny_store, noise, seed):
    before = _snapshot(tiny_store)
    _fails(capsys, "distill", "--dataset", "digits", "--subset", "200", "--noise", noise, "--seed", seed,
           "--method", "datm", "--ipc", "1", "--experts", tiny_store, *TINY_DATM, "--eval", "none", "--out",
           str(tmp_path / "o"), match=[tiny_store, "different setting", "run expects"])
    assert _snapshot(tiny_store) == before  # the store is left exactly as it was


def test_expert_store_with_other_net(capsys, tmp_path, tiny_store):
    _fails(capsys, "distill", "--dataset", "digits", "--subset", "200", "--noise", "symmetric:0.2",
           "--method", "datm", "--ipc", "1", "--experts", tiny_store, *TINY_DATM, "--set", "width=16",
           "--eval", "none", "--out", str(tmp_path / "o"), match=[tiny_store, "'width': 16"])


# ------------------------------------------------------------------------------------------------
# reproducible noise from the CLI
# ------------------------------------------------------------------------------------------------

def test_noise_command_is_reproducible(capsys, labels_file, tmp_path):
    path, y = labels_file
    outs = []
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        out = str(tmp_path / f"{name}.npy")
        rc, _ = _cli(capsys, "noise", "--labels", path, "--noise", "symmetric:0.4", "--seed", seed, "--out", out)
        assert rc == 0
        with open(out, "rb") as f:
            outs.append(f.read())
    assert outs[0] == outs[1]  # byte-identical files
    assert outs[0] != outs[2]  # and the seed matters
    noisy = np.load(tmp_path / "a.npy")
    assert noisy.shape == y.shape and 0.25 < (noisy != y).mean() < 0.55


# ------------------------------------------------------------------------------------------------
# nothing already computed is lost when a later call fails
# ------------------------------------------------------------------------------------------------

def test_failing_denoise_keeps_finished_stages(capsys, tmp_path, monkeypatch):
    """The baseline stage finishes, then the distiller refuses the IPC: the stage file survives, a rerun does
    not recompute it, and a rerun with another config is refused without touching it."""
    import jaxdistill.baseline as baseline

    calls = []

    def fake_run_baseline(data, cfg, key, clean=True, progress=True, **kw):
        calls.append(len(data.y_noisy))  # 200 minus the 10% noisy validation split
        return {"baseline_noisy": {"acc_mean": 0.5, "acc_std": 0.01, "accs": [0.5]}}

    monkeypatch.setattr(baseline, "run_baseline", fake_run_baseline)
    out = str(tmp_path / "run")
    argv = ["denoise", "--dataset", "digits", "--subset", "200", "--methods", "dance", "--ipc", "50", "--k", "1",
            "--out", out]
    _fails(capsys, *argv, match=["ipc=50", "allowed ipc <="])
    stage = os.path.join(out, "stages", "baseline.json")
    with open(stage) as f:
        first = json.load(f)
    assert first["results"]["baseline_noisy"]["acc_mean"] == 0.5 and calls == [180]
    assert os.path.exists(os.path.join(out, "noisy_labels.npz"))

    _fails(capsys, *argv, match=["ipc=50"])
    assert calls == [180]  # the finished stage was loaded, not recomputed
    with open(stage) as f:
        assert json.load(f) == first

    argv2 = [a if a != "50" else "1" for a in argv]
    _fails(capsys, *argv2, match=[out, "different config", "'ipc': (50, 1)"])
    with open(stage) as f:
        assert json.load(f) == first
    assert calls == [180]
    # more control draws is the one change the directory accepts (the run then fails on the IPC again)
    _fails(capsys, *argv, "--control-draws", "2", match=["ipc=50"])
    assert calls == [180] and json.load(open(os.path.join(out, "config.json")))["control_draws"] == 2
    _fails(capsys, *argv, "--control-draws", "0", match=["control_draws=0", ">= 1"])


def test_every_cli_error_is_a_project_error():
    """The error types the CLI turns into exit status 2 all derive from JaxDistillError."""
    for t in (ConfigError, DataError, NoiseError, StoreError):
        assert issubclass(t, JaxDistillError)


def test_distill_at_the_paper_preset_uses_the_study_setting_for_the_noise(capsys, tmp_path, monkeypatch):
    """`distill --preset paper` runs what `denoise --preset paper` runs: the study's changes for this noise
    (configs/study.py) over the method paper's row, then --set."""
    import jaxdistill.configs.study as study
    import jaxdistill.methods as methods

    seen = {}

    def fake_overrides(method, dataset, ipc, noise):
        seen["args"] = (method, dataset, ipc, str(noise))
        return {"iterations": 7, "mom_img": 0.25}

    class Stop(Exception):
        pass

    def fake_distill(method, cfg, data, key, workdir=None, **kw):
        seen["cfg"] = cfg
        raise Stop

    monkeypatch.setattr(study, "study_overrides", fake_overrides)
    monkeypatch.setattr(methods, "distill", fake_distill)
    with pytest.raises(Stop):
        cli.main(["distill", "--dataset", "digits", "--subset", "200", "--noise", "asymmetric:0.2", "--method",
                  "dance", "--preset", "paper", "--ipc", "10", "--set", "mom_img=0.75", "--out", str(tmp_path / "o")])
    assert seen["args"] == ("dance", "digits", 10, "asymmetric:0.2")
    assert (seen["cfg"].iterations, seen["cfg"].mom_img, seen["cfg"].preset) == (7, 0.75, "paper")
    assert study.run_config("dance", "digits", 10, "quick", "clean") == methods.get_config("dance", "digits", 10, "quick")
