"""Repair rules against naive loops, a tiny end-to-end repair, and the hard-sample study table and figure."""
import dataclasses

import jax
import numpy as np
import pytest

from jaxdistill import hardsamples, repair as rp
from jaxdistill.detect import scores_from_probs
from jaxdistill.errors import ConfigError, DataError


def _probs(seed=0, n=200, c=4, noise=0.3):
    rs = np.random.RandomState(seed)
    y_true = rs.randint(0, c, n)
    y = np.where(rs.rand(n) < noise, (y_true + rs.randint(1, c, n)) % c, y_true)
    z = rs.randn(n, c) * 1.5 + 2.0 * np.eye(c)[y_true]
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    return p, y, y_true


@pytest.mark.parametrize("rule", rp.RULES)
def test_repair_rules_naive(rule):
    p, y, _ = _probs()
    fl = scores_from_probs(p, y).flagged
    lab, kept, rel = rp.repair_labels(p, y, fl, rule, relabel_conf=0.5, drop_below=0.1)
    for i in range(len(y)):
        s = int(np.argmax(p[i]))
        if rule == "relabel":
            exp_rel, exp_keep = fl[i] and s != y[i], True
        elif rule == "select":
            exp_rel, exp_keep = False, not fl[i]
        else:
            exp_rel = fl[i] and s != y[i] and p[i, s] >= 0.5
            exp_keep = exp_rel or (not fl[i] and p[i, y[i]] >= 0.1)
        assert rel[i] == exp_rel and kept[i] == exp_keep
        assert lab[i] == (s if exp_rel else y[i])


def test_label_stats_and_errors():
    y = np.array([0, 1, 2, 3])
    st = rp.label_stats(y, np.array([0, 1, 1, 3]), np.array([1, 1, 1, 0], bool), y_true=np.array([0, 1, 1, 2]))
    assert st == {"kept_fraction": 0.75, "relabelled_fraction": 0.25, "num_kept": 3, "label_acc_before": 0.5,
                  "label_acc_after_kept": 1.0, "clean_kept_fraction": 1.0, "noisy_fixed_fraction": 0.5}
    with pytest.raises(ConfigError, match="relabel_select"):
        rp.RepairConfig(rule="fix")
    with pytest.raises(ConfigError, match="relabel"):
        rp.repair_labels(np.eye(2), np.array([0, 1]), np.zeros(2, bool), "fix")


def test_repair_end_to_end_tiny():
    """Scores from a simulated out-of-sample predictor; the repaired labels are cleaner and both nets train."""
    from jaxdistill.baseline import BaselineConfig
    from jaxdistill.data import load_dataset, make_noisy_data
    from jaxdistill.train import TrainConfig

    data = make_noisy_data(load_dataset("digits"), "symmetric:0.4", seed=0, subset=300)
    rs = np.random.RandomState(0)
    z = rs.randn(300, 10) + 3.0 * np.eye(10)[data.y_true]
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    scores = scores_from_probs(p, data.y_noisy)
    bcfg = BaselineConfig(width=8, k=2, train=TrainConfig(epochs=3, batch_size=128, lr=0.01, momentum=0.9))
    out = rp.repair(data, None, jax.random.PRNGKey(0), rp.RepairConfig(train=bcfg), scores=scores)
    st = out.stats
    assert st["label_acc_after_kept"] > st["label_acc_before"] + 0.2, st
    assert out.kept_mask.shape == (300,) and out.labels_repaired.dtype == np.int32
    np.testing.assert_array_equal(out.labels_repaired[~out.relabelled_mask], data.y_noisy[~out.relabelled_mask])
    for name in ("repair", "baseline_noisy"):
        assert len(out.results[name]["accs"]) == 2 and 0.0 <= out.results[name]["acc_mean"] <= 1.0


def test_hard_sample_table_naive():
    pf, _, y = _probs(1, n=300, c=5, noise=0.0)
    pd, _, _ = _probs(2, n=300, c=5, noise=0.0)
    pd = 0.5 * pd + 0.5 * pf
    t = hardsamples.hard_sample_table(pf, pd, y, 5, bins=4)
    rows = np.arange(300)
    srt = np.sort(pf, 1)
    marg = np.array([(pf[i, y[i]] - max(pf[i, j] for j in range(5) if j != y[i]) + 1) / 2 for i in rows])
    np.testing.assert_allclose(t["margin"], marg)
    lost = (pf.argmax(1) == y) & (pd.argmax(1) != y)
    assert t["overall"]["lost"] == lost.sum()
    assert sum(e["n"] for e in t["per_bin"]) == 300 and sum(e["lost"] for e in t["per_bin"]) == lost.sum()
    for e in t["per_class"]:
        m = y == e["class"]
        assert e["lost"] == (lost & m).sum()
        assert e["full_correct"] == ((pf.argmax(1) == y) & m).sum()
    # Quantile bins are (nearly) equal-sized, hardest first.
    assert all(70 <= e["n"] <= 80 for e in t["per_bin"])
    assert t["per_bin"][0]["margin_hi"] <= t["per_bin"][-1]["margin_lo"]
    # (K, N, C) logits are averaged after softmax.
    logits = np.log(np.stack([pf, pf]))
    t2 = hardsamples.hard_sample_table(logits, np.log(pd)[None], y, 5, bins=4, are_probs=False)
    np.testing.assert_allclose(t2["margin"], marg, rtol=1e-10)
    with pytest.raises(DataError):
        hardsamples.hard_sample_table(pf[:10], pd, y, 5)
    del srt


def test_hard_sample_plot(tmp_path):
    pf, _, y = _probs(3, n=100, c=3, noise=0.0)
    t = hardsamples.hard_sample_table(pf, np.roll(pf, 1, axis=0), y, 3, bins=3)
    path = hardsamples.plot_hard_samples(t, str(tmp_path / "h.png"), title="t")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_repair_trains_the_repaired_labels_with_the_recipe_and_the_baseline_to_memorisation(monkeypatch):
    """At a preset whose baseline memorises, only the comparison baseline gets that schedule."""
    import dataclasses

    import jaxdistill.baseline as bl
    from jaxdistill.baseline import BaselineConfig, MemoriseConfig
    from jaxdistill.data import load_dataset, make_noisy_data

    data = make_noisy_data(load_dataset("digits"), "symmetric:0.4", seed=0, subset=200)
    p = np.eye(10)[data.y_true] * 0.9 + 0.01
    seen = []

    def fake(d, cfg, key, clean, progress):
        seen.append((len(d.y_noisy), cfg.memorise))
        return {"baseline_noisy": {"acc_mean": 0.5, "acc_std": 0.0, "accs": [0.5]}}

    monkeypatch.setattr(bl, "run_baseline", fake)
    bcfg = dataclasses.replace(BaselineConfig(width=8, k=1), memorise=MemoriseConfig())
    rp.repair(data, None, jax.random.PRNGKey(0), rp.RepairConfig(train=bcfg, baseline=True),
              scores=scores_from_probs(p, data.y_noisy))
    assert [m for _, m in seen] == [None, MemoriseConfig()] and seen[1][0] == 200


@pytest.mark.parametrize("rule", ["forward", "anchor_coteaching", "anchor_coteaching_confident",
                                  "coteaching_anchor_rate"])
def test_training_rules_keep_the_labels_and_train_with_the_anchor(rule):
    """repair with a training rule (jaxdistill.anchored): every label kept as given, the method trained with the
    anchor's probabilities; a confident correct anchor gives the forward rule a near-true transition matrix and
    anchored Co-teaching a forget rate near the noise rate."""
    from jaxdistill.baseline import BaselineConfig
    from jaxdistill.data import load_dataset, make_noisy_data
    from jaxdistill.train import TrainConfig

    data = make_noisy_data(load_dataset("digits"), "symmetric:0.4", seed=0, subset=300)
    p = np.eye(10)[data.y_true] * 0.9 + 0.01
    bcfg = BaselineConfig(width=8, k=1, train=TrainConfig(epochs=2, batch_size=128, lr=0.01, momentum=0.9))
    out = rp.repair(data, None, jax.random.PRNGKey(0), rp.RepairConfig(rule=rule, train=bcfg, baseline=False),
                    scores=scores_from_probs(p, data.y_noisy))
    assert out.kept_mask.all() and not out.relabelled_mask.any()
    np.testing.assert_array_equal(out.labels_repaired, data.y_noisy)
    assert set(out.results) == {"repair"} and 0.0 <= out.results["repair"]["acc_mean"] <= 1.0
    assert out.stats["rule"] == rule
    if rule == "forward":
        # a one-hot correct anchor estimates exactly this draw's transition matrix (soft counts = counts)
        from jaxdistill.anchored import train_anchored
        from jaxdistill.noise import empirical_transition

        r = train_anchored("forward", data, np.eye(10)[data.y_true], bcfg, jax.random.PRNGKey(0))
        np.testing.assert_allclose(r["transition"], empirical_transition(data.y_true, data.y_noisy, 10), atol=1e-12)
        assert "transition_error" in out.stats
    else:
        assert abs(out.stats["tau_error"]) < 0.1, out.stats
    with pytest.raises(ConfigError, match="redistill needs a label rule's repaired labels; rule 'forward' is a "
                                         "training rule"):
        rp.repair(data, None, jax.random.PRNGKey(0), rp.RepairConfig(rule="forward", train=bcfg),
                  scores=scores_from_probs(p, data.y_noisy), redistill=lambda d, k: None)
    with pytest.raises(ConfigError, match="allowed auto, forward, forward_confident, anchor_dividemix, "
                                         "anchor_coteaching, anchor_coteaching_confident, coteaching_anchor_rate, "
                                         "coteaching_relabel, coteaching_vote"):
        from jaxdistill.anchored import train_anchored

        train_anchored("mixup", data, p, bcfg, jax.random.PRNGKey(0))


def test_relabel_flagged_against_a_loop():
    from jaxdistill.anchored import relabel_flagged

    rng = np.random.default_rng(0)
    y, pred, flag = rng.integers(0, 5, 50), rng.integers(0, 5, 50), rng.random(50) < 0.3
    want = np.array([p if f else l for l, p, f in zip(y, pred, flag)])
    out = relabel_flagged(y, flag, pred)
    np.testing.assert_array_equal(out, want)
    assert out.dtype == np.int32
    with pytest.raises(ConfigError, match=r"labels \(50,\), flagged \(49,\)"):
        relabel_flagged(y, flag[:49], pred)


def test_vote_repair_against_a_loop():
    from jaxdistill.anchored import vote_repair

    rng = np.random.default_rng(1)
    y, pp, ap, flag = (rng.integers(0, 3, 80), rng.integers(0, 3, 80), rng.integers(0, 3, 80),
                       rng.random(80) < 0.4)
    labels, kept = vote_repair(y, flag, pp, ap)
    for i in range(80):
        if not flag[i]:
            assert kept[i] and labels[i] == y[i]
        elif pp[i] == ap[i]:
            assert kept[i] and labels[i] == pp[i]
        else:
            assert not kept[i]
    assert 0 < kept.sum() < 80


@pytest.mark.parametrize("rule", ["coteaching_relabel", "coteaching_vote"])
def test_coteaching_relabel_repairs_what_its_pair_flags_and_trains_on_it(rule):
    """Stage 1 is coteaching_anchor_rate on the same key (the same pair, scores and flags); the labels it trains
    on are the given ones with each flagged label replaced by the pair's prediction (vote: only where the anchor
    agrees, the other flagged dropped; a loop); stage 2 is one cross-entropy net on the kept samples and those
    labels with fold_in(key, 1); repair() reports those labels and that selection."""
    import dataclasses

    from jaxdistill import baselines as B
    from jaxdistill.anchored import train_anchored
    from jaxdistill.baseline import BaselineConfig
    from jaxdistill.data import load_dataset, make_noisy_data
    from jaxdistill.train import TrainConfig

    data = make_noisy_data(load_dataset("digits"), "symmetric:0.4", seed=0, subset=300, val_fraction=0.1)
    # an anchor that is right on 70% of the images, so that it confirms some of the pair's relabels, not all
    rng = np.random.default_rng(0)
    anchor_pred = np.where(rng.random(len(data.y_true)) < 0.7, data.y_true, (data.y_true + 1) % 10)
    p = np.eye(10)[anchor_pred] * 0.9 + 0.01
    bcfg = BaselineConfig(width=8, k=1, train=TrainConfig(epochs=3, batch_size=64, lr=0.05, momentum=0.9))
    key = jax.random.PRNGKey(3)
    k_train = jax.random.split(key, 4)[1]          # the key repair() trains with (its second of four)
    pair = train_anchored("coteaching_anchor_rate", data, p, bcfg, k_train)
    r = train_anchored(rule, data, p, bcfg, k_train)
    np.testing.assert_allclose(r["label_scores"], pair["label_scores"], rtol=1e-6)
    assert r["flagged"] == pair["flagged"] and r["tau"] == pair["tau"] and r["pair_accs"] == pair["accs"]
    want, keep = [], []
    for yy, pp, ap, f in zip(data.y_noisy, pair["pair_pred"], anchor_pred, pair["flagged"]):
        vetoed = rule == "coteaching_vote" and f and pp != ap
        want.append(pp if f and not vetoed else yy)
        keep.append(not vetoed)
    want, keep = np.asarray(want), np.asarray(keep)
    assert r["labels_repaired"] == [int(v) for v in want] and r["kept_mask"] == keep.tolist()
    assert r["relabelled"] == int(np.sum(want != data.y_noisy)) > 0
    assert (keep.mean() < 1.0) == (rule == "coteaching_vote")
    assert r["noise_rate_repaired"] == pytest.approx(float(np.mean(want[keep] != data.y_true[keep])))
    ce = B.train_robust(dataclasses.replace(data, x_train=data.x_train[keep], y_noisy=want[keep].astype(np.int32),
                                            y_true=data.y_true[keep]),
                        B.RobustConfig(loss="ce", width=8, k=1, train=bcfg.train), jax.random.fold_in(k_train, 1))
    np.testing.assert_allclose(r["accs"], ce["accs"], rtol=1e-6)
    from jaxdistill.anchored import final_val

    assert final_val(r) == pytest.approx(ce["val_curve"][-1])   # auto chooses by the retrained net, not the pair
    out = rp.repair(data, None, key, rp.RepairConfig(rule=rule, train=bcfg, baseline=False),
                    scores=scores_from_probs(p, data.y_noisy))
    np.testing.assert_array_equal(out.labels_repaired, want)
    np.testing.assert_array_equal(out.kept_mask, keep)
    np.testing.assert_array_equal(out.relabelled_mask, want != data.y_noisy)
    assert out.stats["relabelled_fraction"] == pytest.approx(r["relabelled"] / len(want))
    assert out.stats["kept_fraction"] == pytest.approx(keep.mean())


def test_auto_rule_keeps_the_candidate_best_on_the_noisy_validation_split(monkeypatch):
    """rule auto trains each of AUTO_CANDIDATES and keeps the one with the highest last-epoch noisy-validation
    accuracy (final_val, else the val curve's last point), whatever its test accuracy; without a validation split
    it is refused, naming the way to get one."""
    from types import SimpleNamespace

    from jaxdistill import anchored

    vals = {"forward_confident": {"val_curve": [0.5, 0.71]}, "coteaching_anchor_rate": {"final_val": 0.69}}
    seen = []

    def fake(rule, data, pred_probs, bcfg, key, memo=None):
        seen.append(rule)
        return {"acc_mean": 0.9 if rule == "coteaching_anchor_rate" else 0.8, "accs": [0.8], **vals[rule]}

    monkeypatch.setattr(anchored, "train_anchored", fake)
    data = SimpleNamespace(x_val=np.zeros((3, 2, 2, 1)))
    r = anchored._train_auto(data, None, None, None)
    assert seen == list(anchored.AUTO_CANDIDATES)
    assert r["rule_chosen"] == "forward_confident" and r["acc_mean"] == 0.8
    assert r["auto_candidates"] == {"forward_confident": {"final_val": 0.71, "acc_mean": 0.8},
                                    "coteaching_anchor_rate": {"final_val": 0.69, "acc_mean": 0.9}}
    vals["coteaching_anchor_rate"]["final_val"] = [0.70, 0.74]       # k runs: their mean
    assert anchored._train_auto(data, None, None, None)["rule_chosen"] == "coteaching_anchor_rate"
    with pytest.raises(ConfigError, match="rule 'auto' chooses on the noisy validation split.*--val-fraction"):
        anchored._train_auto(SimpleNamespace(x_val=None), None, None, None)
    assert rp.DEFAULT_RULE in anchored.AUTO_CANDIDATES and rp.DEFAULT_LABEL_RULE in rp.LABEL_RULES
