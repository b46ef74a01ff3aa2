"""experiments/beyond/run_beyond.py: the pure parts (budget matching, aggregation over seeds, resume guard).
No training here: the script's end-to-end path is exercised by running it (see its docstring)."""
import importlib.util
import os

import numpy as np
import pytest

from jaxdistill.errors import ConfigError

_PATH = os.path.join(os.path.dirname(__file__), "..", "experiments", "beyond", "run_beyond.py")
_spec = importlib.util.spec_from_file_location("run_beyond", _PATH)
rb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rb)


def _entry(noise, seed, acc, prec, auroc, secs=10.0):
    det = {"precision": prec, "recall": 0.5, "f1": 2 * prec * 0.5 / (prec + 0.5), "auroc": auroc}
    r = {"noise": noise, "seed": seed, "realized_rate": 0.4,
         "detect_distilled": det, "detect_cleanlab": {**det, "precision": prec / 2},
         "baseline_noisy": {"acc_mean": acc}, "jocor": {"acc_mean": acc - 0.1},
         "repair_relabel": {"acc_mean": acc + 0.05, "stats": {"kept_fraction": 1.0, "label_acc_before": 0.6,
                                                               "label_acc_after_kept": 0.9}},
         "seconds": {"entry": secs}}
    return rb.entry_key(noise, seed), r


def test_tables_mean_std_over_seeds_against_numpy():
    accs, precs = [0.70, 0.74, 0.78], [0.8, 0.6, 0.7]
    runs = dict(_entry("symmetric:0.4", s, a, p, 0.9, secs=60 * (s + 1)) for s, (a, p) in enumerate(zip(accs, precs)))
    runs.update([_entry("instance:0.4", 0, 0.5, 0.4, 0.7)])
    md = rb.tables({"args": {"dataset": "fashion_mnist", "subset": 3000, "distiller": "dance", "ipc": 10, "k": 1},
                    "runs": runs})
    m, s = 100 * np.mean(accs), 100 * np.std(accs)
    sym_acc = [ln for ln in md.splitlines() if ln.startswith("| symmetric:0.4 | 3 |")][0]
    assert f"| {m:.1f} +- {s:.1f} |" in sym_acc                      # baseline column
    assert f"| {m + 5:.1f} +- {s:.1f} |" in sym_acc                  # repair relabel column
    assert f"| {m - 10:.1f} +- {s:.1f} |" in sym_acc                 # JoCoR column
    # distilled, select, relabel_select and Co-teaching are missing from these entries
    assert [c.strip() for c in sym_acc.split("|")].count("-") == 4
    ours = [ln for ln in md.splitlines() if ln.startswith("| symmetric:0.4 | ours")][0]
    assert f"| {np.mean(precs):.3f} +- {np.std(precs):.3f} |" in ours
    cl = [ln for ln in md.splitlines() if ln.startswith("| symmetric:0.4 | cleanlab")][0]
    assert f"| {np.mean(precs) / 2:.3f} +- {np.std(precs) / 2:.3f} |" in cl
    inst = [ln for ln in md.splitlines() if ln.startswith("| instance:0.4 | 1 |")][0]
    assert "| 50.0 +- 0.0 |" in inst
    assert "(10-180 s), 4 entries, 6.2 min in all" in md            # (60 + 120 + 180 + 10) s = 6.17 min


def test_mean_std_ignores_missing_and_nan():
    assert rb.mean_std([None, float("nan")]) is None
    m, s, n = rb.mean_std([1.0, None, 3.0, float("nan")])
    assert (m, s, n) == (2.0, 1.0, 2)


def test_cv_epochs_matched_budget():
    # DANCE quick on 3000 images: pool 2 x 2 epochs x 3000 = 12000; 1 net x 200 steps x 100 images = 20000;
    # per CV epoch the 5 folds see 4 x 3000 samples -> round(32000 / 12000) = 3.
    assert rb.cv_epochs_matched(12000, 1, 200, 100, 3000, 5) == 3
    assert rb.cv_epochs_matched(0, 1, 1, 10, 3000, 5) == 1           # never below one epoch
    assert rb.cv_epochs_matched(0, 3, 300, 1000, 1000, 2) == 230     # min(256, M) images per step


def test_distill_cost_reads_pool_and_expert_fields():
    from types import SimpleNamespace as NS

    assert rb.distill_cost(NS(pool_size=2, pretrain_epochs=3), 100) == 600
    # DATM: experts train expert_train_epochs; expert_epochs is the matching horizon and must not count.
    assert rb.distill_cost(NS(num_experts=3, expert_train_epochs=5, expert_epochs=2), 100) == 1500


def test_resume_guard_and_overrides():
    base = {k: None for k in rb.RESULT_ARGS}
    rb.check_resume(base, {**base, "noise": ["instance:0.4"], "seeds": [5]})   # noise/seeds may change
    with pytest.raises(ConfigError, match="epochs"):
        rb.check_resume({**base, "epochs": 6}, {**base, "epochs": 10})
    assert rb.parse_overrides(["iterations=30", "lr_img=0.5", "init=real"]) == {
        "iterations": 30, "lr_img": 0.5, "init": "real"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        rb.parse_overrides(["iterations"])


def test_run_mode_end_to_end_at_tiny_shapes_and_resumes(tmp_path, capsys):
    """The `run` mode once through (digits, the prototype 'distiller', one noise, one seed, one epoch): every
    entry field the tables read is present, the preset's subset default resolves (a stale import broke it
    once), and a second call skips the finished entry."""
    out = str(tmp_path / "b.json")
    argv = ["run", "--dataset", "digits", "--subset", "300", "--noise", "symmetric:0.4", "--seeds", "0",
            "--distiller", "prototype", "--preset", "cpu", "--epochs", "1", "--width", "8", "--score-width", "8",
            "--score-steps", "5", "--cv-folds", "2", "--cv-epochs", "1", "--rules", "select", "--out", out]
    assert rb.main(argv) == 0
    res = rb.read_json(out)
    (entry,) = res["runs"].values()
    assert res["args"]["preset"] == "cpu" and res["args"]["subset"] == 300
    for name in ("baseline_noisy", "repair_select", "coteaching", "jocor"):
        assert 0.0 <= entry[name]["acc_mean"] <= 1.0, name
    for det in ("detect_distilled", "detect_cleanlab"):
        assert 0.0 <= entry[det]["auroc"] <= 1.0
    assert abs(entry["realized_rate"] - 0.4) < 0.1
    capsys.readouterr()
    assert rb.main(argv) == 0
    assert rb.read_json(out)["runs"] == res["runs"]    # the finished entry is not run again


def test_aggregate_writes_tables_and_a_plot_of_the_same_means(tmp_path):
    """`aggregate` writes the .md and a .png beside it; the plotted bars are the seed means of the table
    (checked against numpy), a method missing from every entry has no bars, and one missing for one noise
    leaves that slot empty."""
    accs = [0.70, 0.74, 0.78]
    runs = dict(_entry("symmetric:0.4", s, a, 0.7, 0.80 + 0.05 * s) for s, a in enumerate(accs))
    runs.update([_entry("instance:0.4", 0, 0.5, 0.4, 0.7)])
    runs[rb.entry_key("instance:0.4", 0)].pop("jocor")
    res = {"args": {"dataset": "fashion_mnist", "distiller": "dance", "ipc": 10, "k": 1, "preset": "cpu"},
           "runs": runs}
    out = str(tmp_path / "r.json")
    rb.atomic_write_json(out, res)
    assert rb.main(["aggregate", "--out", out]) == 0
    assert os.path.getsize(tmp_path / "r.md") > 0
    with open(tmp_path / "r.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    acc, auroc = rb.plot(str(tmp_path / "again.png"), res)
    np.testing.assert_allclose(acc["baseline (full noisy)"], [100 * np.mean(accs), 50.0], rtol=1e-6)
    np.testing.assert_allclose(acc["repair relabel"], [100 * np.mean(accs) + 5, 55.0], rtol=1e-6)
    assert acc["JoCoR"][0] == pytest.approx(100 * np.mean(accs) - 10) and np.isnan(acc["JoCoR"][1])
    assert "Co-teaching" not in acc and "distilled set" not in acc   # in no entry: no bars
    np.testing.assert_allclose(auroc["ours (distilled-set nets)"], [0.85, 0.7], rtol=1e-6)
    np.testing.assert_allclose(auroc["cleanlab (K-fold CV)"], [0.85, 0.7], rtol=1e-6)
