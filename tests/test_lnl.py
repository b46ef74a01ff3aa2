"""experiments/beyond/run_lnl.py: aggregation over seeds (against NumPy), the table, the resume guard and the
method check. The training paths are the methods' own (tests/test_dividemix.py, test_robust_losses.py, ...)."""
import importlib.util
import os

import numpy as np
import pytest

from jaxdistill.checkpoint import atomic_write_json
from jaxdistill.errors import ConfigError

_PATH = os.path.join(os.path.dirname(__file__), "..", "experiments", "beyond", "run_lnl.py")
_spec = importlib.util.spec_from_file_location("run_lnl", _PATH)
rl = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rl)


def _cells():
    cells = {}
    for s, (last, best, dm, au) in enumerate([(0.80, 0.84, 0.86, 0.95), (0.78, 0.85, 0.88, 0.97),
                                              (0.76, 0.83, 0.87, 0.96)]):
        cells[rl.cell_key("symmetric:0.4", s, "baseline_memorise")] = {
            "noise": "symmetric:0.4", "seed": s, "method": "baseline_memorise", "wrong_fit": 0.9 + 0.02 * s,
            "epochs": 60 + 10 * s, "last": {"acc_mean": last}, "best": {"acc_mean": best}}
        cells[rl.cell_key("symmetric:0.4", s, "dividemix")] = {
            "noise": "symmetric:0.4", "seed": s, "method": "dividemix", "acc_mean": dm, "best_acc_mean": dm + 0.01,
            "detect": {"auroc": au, "precision": 0.5, "recall": 0.7, "f1": 0.583}}
    cells[rl.cell_key("asymmetric:0.4", 0, "gce")] = {"noise": "asymmetric:0.4", "seed": 0, "method": "gce",
                                                      "acc_mean": 0.7}
    cells[rl.cell_key("symmetric:0.4", 0, "baseline")] = {"noise": "symmetric:0.4", "seed": 0, "method": "baseline",
                                                         "last": {"acc_mean": 0.83}, "best": {"acc_mean": 0.82}}
    return cells


def test_aggregate_means_over_seeds_against_numpy():
    agg = rl.aggregate(_cells())
    sym = agg["symmetric:0.4"]
    np.testing.assert_allclose(sym["baseline_last"]["acc_mean"], np.mean([0.80, 0.78, 0.76]))
    np.testing.assert_allclose(sym["baseline_last"]["acc_std"], np.std([0.80, 0.78, 0.76]))
    np.testing.assert_allclose(sym["baseline_best"]["acc_mean"], np.mean([0.84, 0.85, 0.83]))
    np.testing.assert_allclose(sym["dividemix"]["best_acc_mean"], np.mean([0.87, 0.89, 0.88]))
    np.testing.assert_allclose(sym["dividemix"]["auroc"], 0.96)
    assert sym["dividemix"]["seeds"] == 3 and "auroc" not in sym["baseline_last"]
    # the memorising baseline is baseline_last / _best, with how far it fitted the wrong labels; the shared
    # recipe's (40-epoch) baseline is reported under its own name
    np.testing.assert_allclose(sym["baseline_last"]["wrong_fit"], np.mean([0.90, 0.92, 0.94]))
    np.testing.assert_allclose(sym["baseline_last"]["epochs"], 70.0)
    assert "wrong_fit" not in sym["baseline_best"]
    assert sym["baseline_recipe_last"] == {"acc_mean": 0.83, "acc_std": 0.0, "seeds": 1}
    assert sym["baseline_recipe_best"]["acc_mean"] == 0.82
    assert agg["asymmetric:0.4"]["gce"] == {"acc_mean": 0.7, "acc_std": 0.0, "seeds": 1}
    args = {"dataset": "fashion_mnist", "subset": 5000, "val_fraction": 0.1, "preset": "cpu", "ipc": 10,
            "distiller": "dance", "cv_folds": 5, "epochs": None}
    md, budgets = rl.table(agg, args).split("## Budgets")
    # the memorising baseline's mean epochs per noise in the budget table
    assert "epochs: symmetric:0.4 70 |" in budgets and "| 0.18 M |" in budgets
    rows = [ln for ln in md.splitlines() if ln.startswith("| dividemix |")]
    # the accuracy row, then the detection row (its own flags' precision / recall / F1 where recorded)
    assert rows == [f"| dividemix | 87.00 +- {100 * np.std([0.86, 0.88, 0.87]):.2f} | 88.00 | 3 | 0.960 +- "
                    f"{np.std([0.95, 0.97, 0.96]):.3f} |",
                    f"| dividemix | 0.960 +- {np.std([0.95, 0.97, 0.96]):.3f} | 0.500 | 0.700 | 0.583 |"]
    assert "Wrong-label detection under symmetric:0.4" in md
    # sorted best first within a noise
    section = md.split("## symmetric:0.4")[1].split("## ")[0]
    section = section.split("Wrong-label detection")[0]
    sym_rows = [ln.split("|")[1].strip() for ln in section.splitlines() if ln.startswith("| ")]
    assert sym_rows[1:] == ["dividemix", "baseline_best", "baseline_recipe_last", "baseline_recipe_best",
                            "baseline_last"]


def test_run_refuses_other_settings_and_unknown_methods(tmp_path):
    runs = tmp_path / "runs.json"
    a = rl.build_parser().parse_args(["run", "--runs", str(runs), "--methods", "baseline"])
    atomic_write_json(str(runs), {"args": {**{k: getattr(a, k) for k in rl.RESULT_ARGS}, "subset": 123},
                                  "cells": {}})
    with pytest.raises(ConfigError, match=r"other settings.*subset.*123, 5000"):
        rl.cmd_run(a)
    bad = rl.build_parser().parse_args(["run", "--runs", str(runs), "--methods", "mixup"])
    with pytest.raises(ConfigError, match=r"\['mixup'\].*allowed baseline, baseline_memorise, gce"):
        rl.cmd_run(bad)
    assert rl.main(["run", "--runs", str(runs), "--methods", "mixup"]) == 2


def test_cleanlearning_prunes_what_cleanlab_flags(monkeypatch):
    """CV probabilities that know the true classes: cleanlab flags the wrong labels, and the refit sees exactly
    the kept rows (the training itself is the baseline's, tested elsewhere)."""
    pytest.importorskip("cleanlab")
    import jax

    from jaxdistill.baseline import get_baseline_config
    from jaxdistill.baselines import cleanlearning as clm

    rs = np.random.RandomState(0)
    n, c = 300, 3
    y_true = rs.randint(0, c, n)
    y = np.where(rs.rand(n) < 0.3, (y_true + 1) % c, y_true)
    probs = np.full((n, c), 0.05)
    probs[np.arange(n), y_true] = 0.9
    from jaxdistill.data import NoisyData

    data = NoisyData("toy", rs.rand(n, 4, 4, 1).astype(np.float32), y, y_true, rs.rand(5, 4, 4, 1), np.zeros(5),
                     c, ["a", "b", "c"])
    seen = {}
    monkeypatch.setattr(clm, "cross_val_pred_probs", lambda d, k, folds, epochs, width, train_cfg, progress: probs)

    def fake_baseline(d, cfg, key, clean, progress):
        seen["y"], seen["y_true"], seen["memorise"] = d.y_noisy, d.y_true, cfg.memorise
        return {"baseline_noisy": {"acc_mean": 0.5, "acc_std": 0.0, "accs": [0.5]}}

    monkeypatch.setattr(clm, "run_baseline", fake_baseline)
    import dataclasses

    from jaxdistill.baseline import MemoriseConfig

    # a preset whose baseline memorises (cpu): the refit trains with the shared recipe, not that schedule
    bcfg = dataclasses.replace(get_baseline_config("digits", "quick"), memorise=MemoriseConfig())
    r = clm.train_cleanlearning(data, bcfg, jax.random.PRNGKey(0), folds=2)
    assert seen["memorise"] is None
    wrong = y != y_true
    assert r["kept_fraction"] == pytest.approx(1 - wrong.mean())
    np.testing.assert_array_equal(seen["y"], y[~wrong])
    np.testing.assert_array_equal(seen["y"], seen["y_true"])     # every kept label is right
    assert r["detect"]["precision"] == 1.0 and r["detect"]["recall"] == 1.0 and r["detect"]["auroc"] == 1.0
    assert "best_acc_mean" not in r and r["acc_mean"] == 0.5


def test_lnl_command_runs_a_method_and_writes_its_results(tmp_path, capsys):
    import json

    from jaxdistill.cli import main

    out = tmp_path / "elr"
    rc = main(["lnl", "--dataset", "digits", "--method", "elr", "--preset", "quick", "--epochs", "2", "--k", "1",
               "--width", "8", "--out", str(out)])
    assert rc == 0
    doc = json.loads((out / "results.json").read_text())
    r = doc["results"]
    assert set(r) == {"elr", "elr valselected"} and doc["config"]["baseline"]["train"]["epochs"] == 2
    assert 0.0 <= r["elr"]["acc_mean"] <= 1.0 and len(r["elr"]["accs"]) == 1 and r["elr"]["config"]["width"] == 8
    scores = np.load(out / "label_scores.npy")
    d = r["elr"]["detect"]
    assert len(scores) == round(d["num_issues"] / d["base_rate"]) > 0     # one score per training label
    assert np.all((0 <= scores) & (scores <= 1)) and 0.0 <= r["elr"]["detect"]["auroc"] <= 1.0
    assert "AUROC" in capsys.readouterr().out
    assert main(["lnl", "--dataset", "digits", "--method", "elr", "--cv-folds", "1", "--out", str(tmp_path / "b")]) == 2
    assert "--cv-folds=1 must be >= 2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["lnl", "--dataset", "digits", "--method", "mixup", "--out", str(tmp_path / "c")])


def test_aggregate_writes_the_plot_with_the_tables_numbers(tmp_path):
    runs = tmp_path / "runs.json"
    atomic_write_json(str(runs), {"args": {}, "cells": _cells()})
    out, md, png = tmp_path / "agg.json", tmp_path / "t.md", tmp_path / "p.png"
    assert rl.main(["aggregate", "--runs", str(runs), "--out", str(out), "--table", str(md), "--plot", str(png)]) == 0
    assert png.stat().st_size > 0 and "![methods](p.png)" in md.read_text()
    drawn = rl.plot(str(tmp_path / "p2.png"), rl.aggregate(_cells()))
    acc, au = drawn
    # groups in insertion order: symmetric first, asymmetric second
    np.testing.assert_allclose(acc["baseline_last"], [100 * np.mean([0.80, 0.78, 0.76]), np.nan], rtol=1e-6)
    np.testing.assert_allclose(acc["gce"], [np.nan, 70.0], rtol=1e-6)
    np.testing.assert_allclose(au["dividemix"], [0.96, np.nan], rtol=1e-6)
    assert set(au) == {"dividemix"}


def test_run_refuses_a_store_made_with_another_baseline_recipe(tmp_path):
    runs = tmp_path / "runs.json"
    a = rl.build_parser().parse_args(["run", "--dataset", "digits", "--runs", str(runs), "--methods", "baseline",
                                      "--noise", "symmetric:0.4", "--seeds", "0"])
    args = {k: getattr(a, k) for k in rl.RESULT_ARGS}
    done = {rl.cell_key("symmetric:0.4", 0, "baseline"): {"method": "baseline"}}
    atomic_write_json(str(runs), {"args": args, "cells": done, "recipe": {"width": 999}})
    with pytest.raises(ConfigError, match=r"another baseline recipe \{'width': 999\}"):
        rl.cmd_run(a)
    # an older store without a recorded recipe takes the current one (every cell is done, so nothing trains)
    atomic_write_json(str(runs), {"args": args, "cells": done})
    assert rl.cmd_run(a) == 0
    import json

    stored = json.loads(runs.read_text())["recipe"]
    assert stored["k"] == 1 and stored["train"]["epochs"] >= 1


def test_cells_from_processes_side_by_side_all_survive(tmp_path):
    """Two processes adding cells to one store (update_json's lock): every cell is kept."""
    import multiprocessing as mp

    runs = str(tmp_path / "runs.json")
    atomic_write_json(runs, {"args": {}, "cells": {}})
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_add_cells, args=(runs, p)) for p in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    import json

    cells = json.load(open(runs))["cells"]
    assert sorted(cells) == sorted(f"p{p}c{i}" for p in range(2) for i in range(20))


def _add_cells(path, p):
    from jaxdistill.checkpoint import update_json

    for i in range(20):
        update_json(path, lambda st, i=i: {**st, "cells": {**st["cells"], f"p{p}c{i}": i}})


def test_baseline_memorise_cell_trains_to_memorisation_and_others_keep_the_recipe(monkeypatch):
    """baseline_memorise hands run_baseline the preset's MemoriseConfig; the shared recipe has none."""
    import jaxdistill.baseline as bl

    seen = []

    def fake(data, cfg, key, clean):
        seen.append(cfg)
        return {"baseline_noisy": {"acc_mean": 0.5, "accs": [0.5], "wrong_fit": 0.93, "epochs": 57,
                                   "memorisation": {"stopped_by": "target"}, "curve": {"wrong_fit": [0.2, 0.93]}},
                "baseline_noisy_valselected": {"acc_mean": 0.6, "accs": [0.6], "selected_epoch": [12]}}

    monkeypatch.setattr(bl, "run_baseline", fake)
    a = rl.build_parser().parse_args(["run", "--dataset", "digits", "--preset", "quick"])
    bcfg = rl.full_data_recipe("digits", a)
    assert bcfg.memorise is None
    data = type("D", (), {"name": "digits"})()
    r = rl.run_cell("baseline_memorise", data, 0, a, {}, bcfg)
    assert isinstance(seen[0].memorise, bl.MemoriseConfig) and seen[0].train == bcfg.train
    assert (r["wrong_fit"], r["epochs"], r["selected_epoch"], r["curve"]["wrong_fit"]) == (0.93, 57, [12], [0.2, 0.93])
    assert r["last"]["acc_mean"] == 0.5 and r["best"]["acc_mean"] == 0.6
    rl.run_cell("baseline", data, 0, a, {}, bcfg)
    assert seen[1].memorise is None


def test_anchor_coteaching_cell_ranks_by_the_anchors_cross_entropy(monkeypatch):
    """jaxdistill_anchor_coteaching: the selection bias is the anchor's cross-entropy on each given label (p clipped
    at 1e-4) and the forget rate 1 - the mean anchor clean probability, not the true rate."""
    import jaxdistill.baselines as B
    from jaxdistill.baselines.dividemix import anchor_clean_prob

    rs = np.random.RandomState(0)
    n = 200
    y = rs.randint(0, 3, n)
    probs = rs.dirichlet(np.ones(3), n)
    probs[:5] = 0.0
    probs[np.arange(5), (y[:5] + 1) % 3] = 1.0                      # p(label) = 0 -> clipped: bias log(1e4)
    data = type("D", (), {"y_noisy": y, "y_true": y.copy(), "noise_rate": 0.3, "num_classes": 3})()
    scores = type("S", (), {"pred_probs": probs})()
    monkeypatch.setattr(rl, "_anchor", lambda *a: (None, scores))
    seen = {}

    def fake(d, cfg, key, selection_bias):
        seen.update(bias=selection_bias, tau=cfg.forget_rate, optimizer=cfg.train.optimizer)
        return {"acc_mean": 0.8, "accs": [0.8], "label_precision": [0.7, 0.9],
                "label_scores": (np.asarray(selection_bias) + 1.0).tolist(), "flagged": [False] * n}

    monkeypatch.setattr(B, "train_coteaching", fake)
    a = rl.build_parser().parse_args(["run", "--dataset", "digits", "--preset", "quick"])
    r = rl.run_cell("jaxdistill_anchor_coteaching", data, 0, a, {}, rl.full_data_recipe("digits", a))
    np.testing.assert_allclose(seen["bias"][5:], -np.log(np.clip(probs[np.arange(5, n), y[5:]], 1e-4, 1)))
    np.testing.assert_allclose(seen["bias"][:5], np.log(1e4))
    w = anchor_clean_prob(probs, y)
    np.testing.assert_allclose([seen["tau"], r["tau"]], [1 - w.mean()] * 2)
    np.testing.assert_allclose(r["tau_error"], 1 - w.mean() - 0.3)
    assert seen["optimizer"] == "adam" and r["acc_mean"] == 0.8 and r["label_precision_last"] == 0.9
    assert "detect" in r and "anchor_detect" in r   # the pair's scores and the anchor's alone


def test_entry_records_the_final_noisy_validation_accuracy():
    """final_val (what a rule is chosen on) from a method's final_val, or the last point of its val curve."""
    assert rl._entry({"acc_mean": 0.8, "val_curve": [0.4, 0.45]})["final_val"] == 0.45
    assert rl._entry({"acc_mean": 0.8}, {"acc_mean": 0.7, "val_curve": [0.5, 0.52]})["final_val"] == 0.52
    assert rl._entry({"acc_mean": 0.8, "final_val": [0.3, 0.5]})["final_val"] == 0.4
    assert "final_val" not in rl._entry({"acc_mean": 0.8})


def test_store_memo_keeps_candidates_until_the_cell_is_written(tmp_path):
    """StoreMemo writes each finished sub-run into the store's `partial` section at once (another process's
    cells untouched) and reads it back from a fresh object, as a restarted run would."""
    import json

    path = str(tmp_path / "runs.json")
    atomic_write_json(path, {"args": {}, "cells": {"other|seed0|gce": {"acc_mean": 0.7}}})
    m = rl.StoreMemo(path, "symmetric:0.4|seed0|dividemix")
    assert "lambda_u=0|abc" not in m
    m["lambda_u=0|abc"] = {"final_val": 0.8, "acc_mean": 0.85}
    again = rl.StoreMemo(path, "symmetric:0.4|seed0|dividemix")
    assert "lambda_u=0|abc" in again and again["lambda_u=0|abc"]["final_val"] == 0.8
    assert "lambda_u=0|abc" not in rl.StoreMemo(path, "symmetric:0.4|seed1|dividemix")
    st = json.load(open(path))
    assert st["cells"] == {"other|seed0|gce": {"acc_mean": 0.7}}
    assert list(st["partial"]) == ["symmetric:0.4|seed0|dividemix"]


def test_aggregate_derives_the_auto_row_from_noisy_validation_only():
    """jaxdistill_auto per (noise, seed): the candidate with the higher final_val, even where the other has the
    higher test accuracy; no row where a candidate is missing or has no final_val."""
    c = {rl.cell_key("symmetric:0.4", 0, "jaxdistill_forward_confident"):
         {"noise": "symmetric:0.4", "seed": 0, "method": "jaxdistill_forward_confident", "acc_mean": 0.85,
          "final_val": 0.52},
         rl.cell_key("symmetric:0.4", 0, "jaxdistill_coteaching_anchor_rate"):
         {"noise": "symmetric:0.4", "seed": 0, "method": "jaxdistill_coteaching_anchor_rate", "acc_mean": 0.80,
          "final_val": 0.54},
         rl.cell_key("asymmetric:0.4", 0, "jaxdistill_forward_confident"):
         {"noise": "asymmetric:0.4", "seed": 0, "method": "jaxdistill_forward_confident", "acc_mean": 0.83,
          "final_val": 0.73}}
    d = rl.with_auto(c)
    auto = d[rl.cell_key("symmetric:0.4", 0, "jaxdistill_auto")]
    assert auto["acc_mean"] == 0.80 and auto["rule_chosen"] == "coteaching_anchor_rate"
    assert rl.cell_key("asymmetric:0.4", 0, "jaxdistill_auto") not in d
    agg = rl.aggregate(c)
    assert agg["symmetric:0.4"]["jaxdistill_auto"]["acc_mean"] == pytest.approx(0.80)
    assert "jaxdistill_auto" not in agg["asymmetric:0.4"]


def test_goal_check_margins_spread_and_verdicts():
    e = lambda acc, std=0.0, seeds=3, **kw: {"acc_mean": acc, "acc_std": std, "seeds": seeds, **kw}  # noqa: E731
    full = {n: e(0.70) for n in rl.ESTABLISHED + rl.BASELINES}
    agg = {
        # ahead, everything run with 3 seeds: met; auto is ours even where another of our rows scores higher
        "symmetric:0.4": {**full, "coteaching": e(0.80, 0.03), "cleanlearning": e(0.75, auroc=0.95),
                          "dividemix": e(0.78, auroc=0.96), "jaxdistill_auto": e(0.82, 0.04, auroc=0.90),
                          "jaxdistill_forward": e(0.85), "jaxdistill_coteaching_anchor_rate": e(0.81, auroc=0.97)},
        # ahead in accuracy but behind cleanlab's AUROC: not met
        "asymmetric:0.4": {**full, "cleanlearning": e(0.70, auroc=0.90), "dividemix": e(0.70, auroc=0.80),
                           "jaxdistill_auto": e(0.75, auroc=0.95),
                           "jaxdistill_coteaching_anchor_rate": e(0.74, auroc=0.85)},
        # one seed and DivideMix missing: only 'so far'
        "instance:0.4": {"coteaching": e(0.80, seeds=1), "baseline_last": e(0.6, seeds=1),
                         "jaxdistill_forward_confident": e(0.79, seeds=1)},
    }
    g = rl.goal_check(agg)
    s = g["symmetric:0.4"]
    assert s["ours"]["name"] == "jaxdistill_auto" and s["strongest"]["name"] == "coteaching"
    np.testing.assert_allclose(s["margin"], 0.02)
    np.testing.assert_allclose(s["spread"], 0.05)
    np.testing.assert_allclose(s["margin_best"], 0.05)
    np.testing.assert_allclose(s["auroc_margin"], 0.01)
    assert s["missing"] == [] and s["seeds"] == 3 and s["verdict"] == "met"
    a = g["asymmetric:0.4"]
    np.testing.assert_allclose(a["auroc_margin"], -0.05)
    assert a["margin"] > 0 and a["verdict"] == "not met"
    i = g["instance:0.4"]
    assert i["ours"]["name"] == "jaxdistill_forward_confident" and i["seeds"] == 1
    assert "dividemix" in i["missing"] and "baseline_best" in i["missing"] and i["verdict"] == "behind so far"
    assert "jaxdistill_coteaching_anchor_rate" in i["missing"] and "auroc" not in i
    md = "\n".join(rl.goal_table(g))
    assert "| symmetric:0.4 | jaxdistill_auto 82.00 | coteaching 80.00 | +2.00 (5.00) |" in md
    assert md.count("**met**") == 1 and "**not met**" in md and "**behind so far**" in md


def test_todo_lists_missing_goal_cells_seed_major_with_estimates():
    cells = {rl.cell_key("symmetric:0.4", 0, m): {"noise": "symmetric:0.4", "seed": 0, "method": m, "seconds": sec}
             for m, sec in [("elr", 100.0), ("gce", 300.0)]}
    cells[rl.cell_key("asymmetric:0.4", 0, "elr")] = {"noise": "asymmetric:0.4", "seed": 0, "method": "elr",
                                                      "seconds": 200.0}
    left = rl.todo(cells, noises=("symmetric:0.4", "asymmetric:0.4"), seeds=range(2), methods=("elr", "gce"))
    assert [(t["noise"], t["seed"], t["method"]) for t in left] == [
        ("asymmetric:0.4", 0, "gce"), ("symmetric:0.4", 1, "elr"), ("symmetric:0.4", 1, "gce"),
        ("asymmetric:0.4", 1, "elr"), ("asymmetric:0.4", 1, "gce")]
    assert left[1]["seconds"] == 150.0 and left[0]["seconds"] == 300.0  # medians of the finished cells
    assert left[0]["command"].endswith("--noise asymmetric:0.4 --seeds 0 --methods gce")
    assert rl.todo(cells, seeds=range(1), methods=("jocor",))[0]["seconds"] is None


def test_dividemix_long_cell_triples_the_schedule_and_counts_as_a_reference(monkeypatch):
    import jaxdistill.baselines as B

    seen = []

    def fake(data, cfg, key, memo=None):
        seen.append(cfg)
        return {"acc_mean": 0.9, "accs": [0.9], "final_val": 0.5, "lambda_u": 0.0, "config": {},
                "lambda_u_candidates": {}, "label_scores": [0.9, 0.1], "flagged": [True, False]}

    monkeypatch.setattr(B, "train_dividemix_select", fake)
    a = rl.build_parser().parse_args(["run", "--dataset", "digits", "--preset", "quick"])
    bcfg = rl.full_data_recipe("digits", a)
    data = type("D", (), {"name": "digits", "y_noisy": np.array([0, 1]), "y_true": np.array([1, 1])})()
    r = rl.run_cell("dividemix_long", data, 0, a, {}, bcfg)
    cfg = seen[0]
    assert cfg.train.epochs == rl.LONG_FACTOR * bcfg.train.epochs and cfg.rampup == rl.LONG_FACTOR * 16
    assert cfg.train.milestones == bcfg.train.milestones and cfg.warmup_epochs == round(0.1 * cfg.train.epochs)
    assert r["acc_mean"] == 0.9 and r["final_val"] == 0.5 and r["detect"]["auroc"] == 1.0
    # where it has run it is a reference of the goal's check; where not, it is not counted missing
    e = lambda acc: {"acc_mean": acc, "acc_std": 0.0, "seeds": 1}  # noqa: E731
    g = rl.goal_check({"symmetric:0.4": {"dividemix_long": e(0.9), "coteaching": e(0.8),
                                         "jaxdistill_auto": e(0.85)}})["symmetric:0.4"]
    assert g["strongest"]["name"] == "dividemix_long" and "dividemix_long" not in g["missing"]
