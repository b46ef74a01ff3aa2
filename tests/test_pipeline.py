"""A tiny end-to-end `denoise` on digits, and resume that recomputes nothing finished."""
import json
import os

import jax
import numpy as np
import pytest

from jaxdistill.errors import ConfigError
from jaxdistill.pipeline import TINY_OVERRIDES, DenoiseConfig, run_denoise

TINY = TINY_OVERRIDES


def _cfg(**kw):
    base = dict(dataset="digits", noise="symmetric:0.4", methods=("datm", "dance", "rcig"), ipc=1, preset="quick",
                k=2, subset=600, overrides=TINY, protocols=("standard", "own"))
    base.update(kw)
    return DenoiseConfig(**base)


@pytest.mark.slow
def test_tiny_denoise_end_to_end_and_resume(tmp_path, monkeypatch, capsys):
    out = str(tmp_path / "run")
    doc = run_denoise(_cfg(), out, progress=False)
    res = doc["results"]
    for name in ("baseline_last", "baseline_best", "baseline_clean", "datm/standard", "datm/datm",
                 "dance/standard", "dance/dance", "rcig/standard", "rcig/rcig", "control/random_noisy/standard",
                 "control/random_clean/standard", "control/selected_datm/standard",
                 "control/selected_dance/standard", "control/selected_rcig/standard"):
        assert name in res, name
        assert len(res[name]["accs"]) == 2
        assert 0.0 <= res[name]["acc_mean"] <= 1.0
        np.testing.assert_allclose(res[name]["acc_mean"], np.mean(res[name]["accs"]), rtol=1e-6)
    assert abs(doc["noise"]["realized"] - 0.4) < 0.06 and doc["noise"]["seed"] == 0
    for f in ("results.json", "report.md", "noise.png", "distilled_datm.png", "distilled_dance.png",
              "distilled_rcig.png"):
        assert os.path.getsize(os.path.join(out, f)) > 0, f
    report = open(os.path.join(out, "report.md")).read()
    assert "| datm | 1 | standard |" in report and "What the figures say" in report
    # every distilled figure stands next to its controls, trained by the same nets and keys
    assert "| control: random_clean | 1 | standard |" in report and "Against the controls" in report
    assert "vs random_noisy | vs random_clean | vs selected" in report
    d = 100 * (res["dance/standard"]["acc_mean"] - res["control/random_clean/standard"]["acc_mean"])
    assert f"| dance | standard | {100 * res['dance/standard']['acc_mean']:.2f} | " in report and f"{d:+.2f}" in report
    assert "use `--preset paper` (a GPU) for real work" in report and "`--preset cpu`" in report
    conv = res["baseline_last"]["convergence"]
    # 2 tiny epochs cannot converge; the report says which baseline it is (quick: a fixed schedule)
    assert conv["converged"] is False and "has NOT stopped rising" in report
    assert res["baseline_last"]["schedule"] == "fixed 2 epochs" and "fixed 2 epochs schedule" in report
    assert 0.0 <= res["baseline_last"]["wrong_fit"] <= 1.0 and "of the wrong labels (`wrong_fit`)" in report
    assert len(res["baseline_last"]["curve"]["train_noisy"]) == 2
    # the selected control is the distiller's starting point: DANCE's is its first ipc images per noisy class
    from jaxdistill.methods.base import DistilledSet

    init = DistilledSet.load(os.path.join(out, "dance", "initial.npz"))
    assert init.num_images == 10 and sorted(init.labels.tolist()) == list(range(10))

    # Training curves: every long stage appended its metrics as it went; the report shows them.
    from jaxdistill.runlog import read_metrics

    base = read_metrics(os.path.join(out, "baseline"))
    assert {"baseline_noisy", "baseline_clean"} <= {r["stage"] for r in base}
    noisy = [r for r in base if r["stage"] == "baseline_noisy"]
    assert any("val_acc" in r for r in noisy) and any("test_acc" in r for r in noisy)
    assert all(r["lr"] > 0 for r in noisy if "loss" in r)
    for m in ("datm", "dance", "rcig"):
        rows = read_metrics(os.path.join(out, m))
        assert {f"distill_{m}", "eval_standard", f"eval_{m}"} <= {r["stage"] for r in rows}, m
        d = [r for r in rows if r["stage"] == f"distill_{m}"]
        assert [r["step"] for r in d] == list(range(1, len(d) + 1)) and len(d) >= 2, m
        assert all(isinstance(r["loss"], float) and r["lr"] > 0 and r["wall_s"] >= 0 for r in d), m
        assert any("test_acc" in r for r in rows if r["stage"] == "eval_standard"), m
    assert read_metrics(os.path.join(out, "datm", "experts")) and read_metrics(os.path.join(out, "dance", "pool"))
    assert "curves.png" in report and os.path.getsize(os.path.join(out, "curves.png")) > 0

    # Resume: nothing finished is recomputed (every expensive entry point would raise).
    import jaxdistill.baseline as b
    import jaxdistill.evaluate as e
    import jaxdistill.methods as m

    def boom(*a, **k):
        raise AssertionError("a finished stage was recomputed")

    monkeypatch.setattr(b, "run_baseline", boom)
    monkeypatch.setattr(e, "evaluate", boom)
    monkeypatch.setattr(m, "distill", boom)
    doc2 = run_denoise(_cfg(), out, progress=False)
    assert json.dumps(doc2["results"], sort_keys=True) == json.dumps(res, sort_keys=True)

    # An interrupted run (one stage lost) recomputes exactly that stage.
    os.remove(os.path.join(out, "stages", "eval_rcig_rcig.json"))
    calls = []
    monkeypatch.setattr(e, "evaluate", lambda *a, **k: calls.append(a[2].name) or _fake_eval())
    doc3 = run_denoise(_cfg(), out, progress=False)
    assert calls == ["rcig"]
    assert doc3["results"]["rcig/rcig"]["acc_mean"] == 0.5

    # The same directory refuses a different config, and keeps what it has.
    with pytest.raises(ConfigError, match="different config"):
        run_denoise(_cfg(ipc=2), out, progress=False)
    assert os.path.exists(os.path.join(out, "stages", "eval_datm_datm.json"))

    # More control draws on a finished run: only the new draws are evaluated, and each random control's row
    # pools the nets of both draws (draw 0 is the real evaluation above, draw 1 the fake 0.5s).
    calls.clear()
    doc4 = run_denoise(_cfg(control_draws=2), out, progress=False)
    assert sorted(calls) == ["standard", "standard"]
    r4 = doc4["results"]
    for name in ("random_noisy", "random_clean"):
        row, first = r4[f"control/{name}/standard"], res[f"control/{name}/standard"]
        assert row["draws"] == 2 and row["accs"] == first["accs"] + [0.5, 0.5]
        np.testing.assert_allclose(row["acc_mean"], np.mean(first["accs"] + [0.5, 0.5]), rtol=1e-6)
        np.testing.assert_allclose(row["draw_std"], abs(np.mean(first["accs"]) - 0.5) / 2, rtol=1e-6)
        assert os.path.exists(os.path.join(out, "stages", f"eval_control_{name}@draw1_standard.json"))
    assert json.dumps(r4["control/selected_dance/standard"], sort_keys=True) == \
        json.dumps(res["control/selected_dance/standard"], sort_keys=True)   # not a random draw: unchanged
    assert json.load(open(os.path.join(out, "config.json")))["control_draws"] == 2
    with pytest.raises(ConfigError, match="control_draws=0 must be an integer >= 1"):
        _cfg(control_draws=0)


def _fake_eval():
    from jaxdistill.evaluate import EvalResult

    return EvalResult("rcig", [0.5, 0.5], 0.5, 0.0, seconds=1.0)


def test_bad_denoise_config():
    with pytest.raises(ConfigError, match="allowed parts"):
        _cfg(overrides={"dnace": {}})
    with pytest.raises(ConfigError, match="preset='fast'"):
        _cfg(preset="fast")
    with pytest.raises(ConfigError, match="protocol 'best'"):
        _cfg(protocols=("best",))
