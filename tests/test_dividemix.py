"""DivideMix (jaxdistill.baselines.dividemix): the mixture against scikit-learn, sharpening, co-refinement,
mixup and the MixMatch loss against NumPy formulas, the batch split, and a tiny end-to-end run."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdistill.baselines import dividemix as dm
from jaxdistill.errors import ConfigError


def _losses(seed=0, n_clean=300, n_wrong=200):
    rs = np.random.RandomState(seed)
    v = np.concatenate([rs.gamma(2.0, 0.15, n_clean), 2.0 + rs.gamma(3.0, 0.3, n_wrong)])
    return dm.minmax(v), np.r_[np.zeros(n_clean, bool), np.ones(n_wrong, bool)]


@pytest.mark.parametrize("seed", [0, 1])
def test_gmm_posterior_matches_sklearn(seed):
    from sklearn.mixture import GaussianMixture

    x, _ = _losses(seed)
    g = GaussianMixture(n_components=2, max_iter=200, tol=1e-8, reg_covar=5e-4, random_state=0).fit(x[:, None])
    expect = g.predict_proba(x[:, None])[:, g.means_.argmin()]
    got = dm.gmm_clean_prob(x, max_iter=200, tol=1e-8, reg=5e-4)
    chex.assert_trees_all_close(got, expect, atol=1e-5)
    # DivideMix's own budget (10 iterations, tol 1e-2) stays close to the converged mixture here
    short = dm.gmm_clean_prob(x)
    assert np.abs(short - expect).max() < 0.05


def test_gmm_separates_the_wrong_labels_and_degenerate_input():
    x, wrong = _losses(2)
    w = dm.gmm_clean_prob(x)
    assert (w[~wrong] > 0.5).mean() > 0.95 and (w[wrong] < 0.5).mean() > 0.95
    chex.assert_trees_all_close(dm.gmm_clean_prob(np.full(5, 0.3)), np.ones(5))


def test_minmax_and_sharpen_and_corefine():
    v = np.array([[2.0, 4.0, 3.0], [1.0, 1.5, 0.5]])
    chex.assert_trees_all_close(dm.minmax(v), np.array([[0, 1, 0.5], [0.5, 1, 0]]))
    rs = np.random.RandomState(3)
    p = rs.dirichlet(np.ones(5), 4)
    for T in (0.5, 1.0, 0.25):
        q = p ** (1 / T)
        chex.assert_trees_all_close(np.asarray(dm.sharpen(jnp.asarray(p), T)), q / q.sum(1, keepdims=True),
                                    rtol=1e-5)
    y = np.eye(5)[[0, 3, 1, 4]]
    w = np.array([1.0, 0.0, 0.3, 0.8])
    expect = np.stack([w[i] * y[i] + (1 - w[i]) * p[i] for i in range(4)])
    chex.assert_trees_all_close(np.asarray(dm.co_refine(jnp.asarray(y), jnp.asarray(w), jnp.asarray(p))), expect,
                                rtol=1e-6)


def test_mixup_formula():
    rs = np.random.RandomState(4)
    x, t = rs.randn(6, 2, 2, 1).astype(np.float32), rs.dirichlet(np.ones(3), 6).astype(np.float32)
    mx, mt, lam, perm = dm.mixup(jax.random.PRNGKey(0), jnp.asarray(x), jnp.asarray(t), 4.0)
    lam, perm = float(lam), np.asarray(perm)
    assert 0.5 <= lam <= 1.0 and sorted(perm.tolist()) == list(range(6))
    chex.assert_trees_all_close(np.asarray(mx), lam * x + (1 - lam) * x[perm], rtol=1e-6)
    chex.assert_trees_all_close(np.asarray(mt), lam * t + (1 - lam) * t[perm], rtol=1e-6)
    lams = [float(dm.mixup(jax.random.PRNGKey(s), jnp.asarray(x), jnp.asarray(t), 4.0)[2]) for s in range(200)]
    # max(l, 1 - l) with l ~ Beta(4, 4): mean 0.5 + E|l - 0.5| = 0.5 + 0.1367 (closed form: 35/256)
    assert abs(np.mean(lams) - (0.5 + 35 / 256)) < 0.02


def test_mixmatch_loss_against_numpy_and_rampup():
    rs = np.random.RandomState(5)
    z = rs.randn(8, 4)
    t = rs.dirichlet(np.ones(4), 8)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    p = np.exp(logp)
    lx = -(t[:5] * logp[:5]).sum(1).mean()
    lu = ((p[5:] - t[5:]) ** 2).mean()
    pen = (0.25 * np.log(0.25 / p.mean(0))).sum()
    got, met = dm.mixmatch_loss(jnp.asarray(z), jnp.asarray(t), 5, 7.0)
    chex.assert_trees_all_close((float(got), float(met["lx"]), float(met["lu"]), float(met["penalty"])),
                                (lx + 7.0 * lu + pen, lx, lu, pen), rtol=1e-5)
    chex.assert_trees_all_close(np.asarray(dm.linear_rampup(jnp.asarray([3.0, 10.0, 18.0, 40.0]), 10, 16)),
                                np.array([0.0, 0.0, 0.5, 1.0]))


def test_anchor_clean_prob_is_the_mixture_on_anchor_losses():
    rs = np.random.RandomState(8)
    y = rs.randint(0, 3, 400)
    wrong = rs.rand(400) < 0.4
    p = np.full((400, 3), 0.05)
    p[np.arange(400), np.where(wrong, (y + 1) % 3, y)] = 0.9  # the anchor believes the true class
    w = dm.anchor_clean_prob(p, y)
    ce = -np.log(p[np.arange(400), y])
    chex.assert_trees_all_close(w, dm.gmm_clean_prob(dm.minmax(ce)))
    assert (w[~wrong] > 0.5).all() and (w[wrong] < 0.5).all()


def test_split_batches():
    w = np.array([[0.9, 0.1, 0.8, 0.7, 0.2, 0.6, 0.95, 0.3]])
    il, wl, iu, active, frac = dm._split_batches(w, 0.5, steps=2, b=2, rs=np.random.RandomState(0))
    il, wl, iu, active = map(np.asarray, (il, wl, iu, active))
    assert set(il.ravel()) <= {0, 2, 3, 5, 6} and set(iu.ravel()) <= {1, 4, 7}
    chex.assert_trees_all_close(wl, w[0][il[0]][None])
    assert frac[0] == 5 / 8 and active.tolist() == [[1.0, 1.0]]  # 5 labelled // batch 2 = 2 steps
    _, _, _, active, _ = dm._split_batches(np.array([[0.9, 0.1, 0.1, 0.1]]), 0.5, 2, 2, np.random.RandomState(0))
    assert np.asarray(active).tolist() == [[1.0, 0.0]]  # DivideMix's len // b, at least one step


def test_config_errors():
    with pytest.raises(ConfigError, match=r"p_threshold=1.5.*\(0, 1\)"):
        dm.DivideMixConfig(p_threshold=1.5)
    with pytest.raises(ConfigError, match=r"warmup=99"):
        dm.DivideMixConfig(warmup=99)
    c = dm.get_dividemix_config("digits", "quick")
    assert c.warmup_epochs == max(1, round(0.1 * c.train.epochs)) and c.lambda_u == 25.0


def test_tiny_run_and_lambda_u_selection():
    from jaxdistill.data import load_dataset, make_noisy_data

    data = make_noisy_data(load_dataset("digits"), "symmetric:0.4", seed=0, subset=300, val_fraction=0.2)
    cfg = dm.get_dividemix_config("digits", "quick", width=8, k=2, warmup=2)
    cfg = cfg.replace(train=cfg.train.replace(epochs=4, batch_size=64, lr=0.05))
    r = dm.train_dividemix_select(data, cfg, jax.random.PRNGKey(0), lambda_us=(0.0, 25.0))
    assert set(r["lambda_u_candidates"]) == {"0.0", "25.0"}
    vals = {lu: v["final_val"] for lu, v in r["lambda_u_candidates"].items()}
    assert r["lambda_u"] == float(max(vals, key=vals.get))
    assert len(r["accs"]) == 2 and all(0.0 <= a <= 1.0 for a in r["accs"] + r["best_accs"])
    assert len(r["loss"]) == 4 and len(r["labelled_fraction"]) == 2 * 2  # 2 divided epochs x 2 nets
    assert all(0.0 <= f <= 1.0 for f in r["labelled_fraction"] + r["label_precision"])
    assert len(r["label_scores"]) == len(data.y_noisy)
    # The anchor's split replaces the nets' own for the first anchor_epochs divided epochs, with no warm-up.
    anchor = np.where(data.y_noisy == data.y_true, 0.9, 0.1)
    ra = dm.train_dividemix(data, cfg.replace(warmup=0, anchor_epochs=1), jax.random.PRNGKey(1), anchor_w=anchor)
    assert ra["labelled_fraction"][:2] == [float((anchor > 0.5).mean())] * 2
    assert ra["label_precision"][:2] == [1.0, 1.0] and ra["config"]["anchor"] and len(ra["loss"]) == 4
    with pytest.raises(ConfigError, match="val_fraction"):
        dm.train_dividemix_select(make_noisy_data(load_dataset("digits"), "symmetric:0.4", subset=100), cfg,
                                  jax.random.PRNGKey(0))


def test_select_reuses_memoised_candidates_and_stores_new_ones(monkeypatch):
    """A candidate in the memo is not trained again; a trained one lands in the memo as soon as it ends; the
    memo's names change with any other setting (config or anchor), so a stale memo is never reused."""
    from types import SimpleNamespace

    calls = []

    def fake(data, cfg, key, progress=False, anchor_w=None):
        calls.append(cfg.lambda_u)
        return {"lambda_u": cfg.lambda_u, "final_val": 0.5, "acc_mean": 0.6}

    monkeypatch.setattr(dm, "train_dividemix", fake)
    data = SimpleNamespace(x_val=np.zeros((4, 2, 2, 1)))
    cfg = dm.DivideMixConfig()
    old = {"lambda_u": 0.0, "final_val": 0.9, "acc_mean": 0.1}
    memo = {dm.candidate_key(cfg.replace(lambda_u=0.0), None): old}
    r = dm.train_dividemix_select(data, cfg, jax.random.PRNGKey(0), memo=memo)
    assert calls == [25.0]                              # lambda_u = 0 came from the memo
    assert r["lambda_u"] == 0.0 and r["final_val"] == 0.9  # and wins on its stored noisy-validation figure
    assert memo[dm.candidate_key(cfg.replace(lambda_u=25.0), None)]["final_val"] == 0.5
    assert len(memo) == 2
    # other settings, other names: nothing reused
    calls.clear()
    dm.train_dividemix_select(data, cfg.replace(p_threshold=0.6), jax.random.PRNGKey(0), memo=memo)
    assert calls == [0.0, 25.0]
    w = np.full(4, 0.5)
    assert dm.candidate_key(cfg, w) != dm.candidate_key(cfg, None) != dm.candidate_key(cfg, w + 0.1)


def test_mix_epoch_runs_only_the_active_steps_like_a_naive_loop():
    """The compiled epoch (a loop to the largest active count, runs vmapped) against a Python loop that takes
    mix_step over each run's own active steps only: same parameters, same mean loss."""
    from jaxdistill.nn import NetConfig, make_net
    from jaxdistill.train import make_optimizer

    rs = np.random.RandomState(0)
    n, b, steps, c = 24, 4, 6, 3
    x = jnp.asarray(rs.rand(n, 6, 6, 1), jnp.float32)
    y1h = jax.nn.one_hot(jnp.asarray(rs.randint(0, c, n)), c)
    cfg = dm.DivideMixConfig(width=4, depth=1, warmup=1, rampup=2)
    net = make_net(NetConfig(c, width=4, depth=1))
    opt = lambda lr: make_optimizer(cfg.train.replace(schedule="constant"), 1, lr=lr)
    aug = lambda k, xb: xb + 0.01 * jax.random.normal(k, xb.shape)
    _, mix_step, mix_epoch = dm.epoch_fns(net, x, y1h, cfg, opt, aug, b)
    keys = jax.random.split(jax.random.PRNGKey(1), 4)
    params = jax.vmap(lambda k: net.init(k, (6, 6, 1)))(keys[:2])
    other = jax.vmap(lambda k: net.init(k, (6, 6, 1)))(keys[2:])
    opt_state = jax.vmap(opt(0.1).init)(params)
    il = jnp.asarray(rs.randint(0, n, (2, steps, b)), jnp.int32)
    iu = jnp.asarray(rs.randint(0, n, (2, steps, b)), jnp.int32)
    wl = jnp.asarray(rs.rand(2, steps, b), jnp.float32)
    counts = [2, 4]
    active = jnp.asarray([[1.0] * k + [0.0] * (steps - k) for k in counts])
    run_keys = jax.random.split(jax.random.PRNGKey(2), 2)
    lr, ef, lu = jnp.float32(0.1), jnp.float32(1.0), jnp.float32(25.0)
    got_p, _, got_l = jax.jit(jax.vmap(mix_epoch, in_axes=(0, 0, 0, 0, None, None, None, 0, 0, 0, 0, None)))(
        params, opt_state, other, run_keys, lr, ef, lu, il, wl, iu, active, jnp.int32(max(counts)))
    for r, k in enumerate(counts):
        pick = lambda t: jax.tree_util.tree_map(lambda a: a[r], t)
        carry = (pick(params), pick(opt_state), pick(other), run_keys[r], lr, ef, lu)
        losses = []
        step = jax.jit(mix_step)
        for s in range(k):
            carry, l = step(carry, (il[r, s], wl[r, s], iu[r, s], jnp.float32(1.0), jnp.int32(s)))
            losses.append(float(l))
        chex.assert_trees_all_close(pick(got_p), carry[0], rtol=1e-5, atol=1e-6)
        assert abs(float(got_l[r]) - np.mean(losses)) < 1e-5
    # a run with no active step keeps its parameters
    same, _, _ = jax.jit(mix_epoch)(*[jax.tree_util.tree_map(lambda a: a[0], t) for t in (params, opt_state, other)],
                                    run_keys[0], lr, ef, lu, il[0], wl[0], iu[0], jnp.zeros(steps), jnp.int32(0))
    chex.assert_trees_all_equal(same, jax.tree_util.tree_map(lambda a: a[0], params))
