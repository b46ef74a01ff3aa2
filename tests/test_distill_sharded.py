"""The three distillers on 4 (forced host) CPU devices give the single-device results.

The main pytest process has already initialised JAX with one CPU device, so everything multi-device runs
once in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=4 and reports numbers as JSON;
each test asserts one part of the report. The oracle for "same as one device" is the same distiller with
devices=1 in the same process; DATM's T-trajectory step is also checked against T single-trajectory
gradients computed one by one and a NumPy SGD step. Tiny shapes throughout (width 4-8, 8x8 digits).
"""
import textwrap

import pytest
from helpers.multidevice import run_on_host_devices

SCRIPT = textwrap.dedent(r'''
import dataclasses, json, tempfile, time
import numpy as np, jax, jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxdistill import sharding as S
from jaxdistill.data import load_dataset, make_noisy_data
from jaxdistill.errors import ConfigError
from jaxdistill.nn import NetConfig, make_net

out = {"devices": jax.device_count()}
tic = time.perf_counter()
def maxdiff(a, b):
    return max(float(np.max(np.abs(np.asarray(u, np.float64) - np.asarray(v, np.float64))))
               for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))
def err(fn):
    try:
        fn()
    except ConfigError as e:
        return str(e)
    return None

data = make_noisy_data(load_dataset("digits"), "symmetric:0.2", seed=0, subset=200)

# ---------------- DATM: one T=4 step, 4 devices vs lax.map on one device vs a naive loop + NumPy SGD ---------
from jaxdistill.methods import datm
from jaxdistill.configs.datm import get_config as datm_config
cfg = datm_config("digits", 1, "quick").replace(
    width=8, depth=1, iterations=3, syn_steps=3, batch_syn=10, max_start_epoch=2, current_max_start_epoch=1,
    expansion_end_epoch=20, expert_epochs=1, num_experts=2, expert_train_epochs=2, expert_batch=100,
    expert_augment="none", expert_sam_rho=0.0, checkpoint_every=10,
    trajectories_per_iter=4, threshold=10.0, lr_img=1000.0)
net = make_net(NetConfig(10, width=8, depth=1))
th, unravel = ravel_pytree(net.init(jax.random.PRNGKey(0), (8, 8, 1)))
apply_flat = lambda t_, xb: net.apply(unravel(t_), xb)
T0 = th[None] + 0.05 * jax.random.normal(jax.random.PRNGKey(1), (4, th.size))
TS = T0 + 0.05 * jax.random.normal(jax.random.PRNGKey(2), (4, th.size))
x0 = np.asarray(jax.random.uniform(jax.random.PRNGKey(4), (10, 8, 8, 1)))
y0 = np.asarray(jax.random.normal(jax.random.PRNGKey(5), (10, 10)))
key = jax.random.PRNGKey(6)
res, few = {}, {}
for name, mesh in (("four", S.data_mesh(4)), ("one", None)):
    step = datm.make_outer_step(apply_flat, cfg, mesh)
    st, loss, finite, applied = step(datm.init_syn_state(cfg, x0, y0, 0.01), T0, TS, key)
    res[name] = (np.asarray(st.x), np.asarray(st.y), float(st.lr), float(loss), bool(applied))
    for i in range(2):  # a few more outer iterations (momentum buffers now non-zero)
        st, loss, finite, applied = step(st, T0[::-1], TS[::-1], jax.random.fold_in(key, i))
    few[name] = (np.asarray(st.x), np.asarray(st.y), float(st.lr))
traj = jax.jit(datm.make_trajectory_grad(apply_flat, cfg))
ks = jax.random.split(key, 4)
naive = [traj((T0[j], TS[j], ks[j]), jnp.asarray(x0), jnp.asarray(y0), jnp.float32(0.01)) for j in range(4)]
loss_ref = float(np.mean([float(l) for l, _ in naive]))
g_ref = [np.mean([np.asarray(g[i], np.float64) for _, g in naive], 0) for i in range(3)]
# First torch-style SGD-momentum step from a fresh buffer: p <- p - lr * g.
x_ref = x0 - cfg.lr_img * g_ref[0]
y_ref = y0 - cfg.lr_y * g_ref[1]
lr_ref = 0.01 - cfg.lr_lr * float(g_ref[2])
out["datm_step"] = {
    "applied": [res["four"][4], res["one"][4]],
    "loss": [res["four"][3], res["one"][3], loss_ref],
    "x_four_vs_naive": maxdiff(res["four"][0], x_ref), "x_one_vs_naive": maxdiff(res["one"][0], x_ref),
    "y_four_vs_naive": maxdiff(res["four"][1], y_ref), "lr_four_vs_naive": abs(res["four"][2] - lr_ref),
    "x_moved": maxdiff(res["four"][0], x0),
    "grad_spread": max(float(np.abs(np.asarray(g[0]) - g_ref[0]).max()) for _, g in naive) / float(np.abs(g_ref[0]).max()),
    "few_x": maxdiff(few["four"][0], few["one"][0]), "few_y": maxdiff(few["four"][1], few["one"][1]),
    "few_lr": abs(few["four"][2] - few["one"][2]), "few_moved": maxdiff(few["four"][0], x0),
}

# ---------------- DATM distill() wiring: T=4 drawn per iteration, split over the 4 devices ------------------------
# (devices=0 -> all 4; the numbers are checked at the step level above, this checks the loop feeds it)
with tempfile.TemporaryDirectory() as d:
    store = datm.build_experts(cfg, data, jax.random.PRNGKey(0), d, progress=False)
    r4 = datm.distill(cfg.replace(lr_img=10.0), data, jax.random.PRNGKey(3), progress=False, store=store)
draws = datm.host_draws_multi((1, 2), 0, cfg, 2, 4)
out["datm_distill"] = {"used": r4.meta["devices_used"], "lr_moved": abs(r4.lr - cfg.lr_teacher),
                       "history": r4.meta["loss_history"], "draws": draws,
                       "draws_t1": [datm.host_draws_multi((1, 2), i, cfg, 2, 1)[0] == datm.host_draws((1, 2), i, cfg, 2)
                                    for i in range(5)]}
out["datm_err_T"] = err(lambda: datm.distill(cfg.replace(trajectories_per_iter=6), data, jax.random.PRNGKey(0),
                                             progress=False, store=None))
out["datm_err_dev"] = err(lambda: datm.distill(cfg.replace(devices=8), data, jax.random.PRNGKey(0),
                                               progress=False, store=None))
out["t_datm"] = time.perf_counter() - tic

# ---------------- DANCE: exact per-class scan and batched view, 10 classes over 4 devices (padded) -------------
from jaxdistill.methods import dance as D
from jaxdistill.configs.dance import DanceConfig
# iter_calib=0: the calibration view runs through the same view function (one compile less per path).
dcfg = DanceConfig(dataset="digits", ipc=1, iterations=2, factor=2, width=8, depth=1, batch_real=6, pool_size=2,
                   num_premodel=2, pretrain_epochs=0, checkpoint_every=10, lr_img=0.05, mean=(0.4,), std=(0.3,),
                   iter_calib=0, preset="quick")
init = D.initial_synset(data.x_train, data.y_noisy, 10, 1, 2)
for batched in (False, True):
    c4 = dataclasses.replace(dcfg, batched_classes=batched)
    a = D.distill(c4, data, jax.random.PRNGKey(2), progress=False)
    b = D.distill(dataclasses.replace(c4, devices=1), data, jax.random.PRNGKey(2), progress=False)
    out[f"dance_{batched}"] = {"used": [a.meta["devices_used"], b.meta["devices_used"]],
                               "images": maxdiff(a.images, b.images),
                               "skipped": [a.meta["skipped_updates"], b.meta["skipped_updates"]],
                               "moved": maxdiff(a.images, D.distill(dataclasses.replace(c4, devices=1, iterations=0),
                                                                    data, jax.random.PRNGKey(2),
                                                                    progress=False).images)}
# A non-finite class step (NaN image of class 3): the parallel scan must fall back to the sequential one.
ncfg = D.net_config(dcfg, 10)
dnet = make_net(ncfg)
pool0 = jax.vmap(lambda k: dnet.init(k, (8, 8, 1)))(jax.random.split(jax.random.PRNGKey(0), 2))
poolT = jax.vmap(lambda k: dnet.init(k, (8, 8, 1)))(jax.random.split(jax.random.PRNGKey(1), 2))
table, counts = D.class_buckets_table(np.asarray(data.y_noisy).astype(np.int32), 10)
args = (pool0, poolT, jnp.asarray((data.x_train - 0.4) / 0.3), jnp.asarray(table), jnp.asarray(counts),
        jnp.asarray(np.float32([0.4])), jnp.asarray(np.float32([0.3])))
syn = init.copy(); syn[3, 0, 0, 0] = np.nan
outs = {}
for n in (4, 1):
    st = D.Statics(num_classes=10, ipc=1, factor=2, n_real=6, n_syn=4, num_premodel=2, iter_calib=0,
                   batched=False, devices=n)
    it = D._cached_iteration(ncfg, st, dcfg.image_lr, dcfg.mom_img)
    tx = __import__("optax").sgd(dcfg.image_lr, momentum=dcfg.mom_img)
    s, o = jnp.asarray(syn), tx.init(jnp.asarray(syn))
    for i in range(2):
        s, o, m = it(s, o, jax.random.PRNGKey(20 + i), *args)
    outs[n] = (np.asarray(s), int(m["skipped"]))
ok = ~np.isnan(outs[1][0])
out["dance_nan"] = {"skipped": [outs[4][1], outs[1][1]], "same_nans": bool(np.array_equal(np.isnan(outs[4][0]), ~ok)),
                    "images": float(np.max(np.abs(outs[4][0][ok] - outs[1][0][ok]))),
                    "moved": float(np.max(np.abs(outs[1][0][ok] - syn[ok])))}
out["t_dance"] = time.perf_counter() - tic

# ---------------- RCIG: real batch of 16 over 4 devices vs one device ------------------------------------------
from jaxdistill.methods import rcig
from jaxdistill.configs.rcig import RCIGConfig
rcfg = RCIGConfig(dataset="digits", ipc=1, width=4, depth=1, iterations=3, pool_size=2, real_batch=16, n_inner=3,
                  n_hinv=3, inner_lr=1e-2, hvp_lr=1e-2, tune_lr=False, preprocess="none", use_flip=True,
                  checkpoint_every=10, max_online_steps=5, preset="quick")
assert rcfg.kernel_backend == "nt"
a = rcig.distill(rcfg, data, jax.random.PRNGKey(5), progress=False)
b = rcig.distill(rcfg.replace(devices=1), data, jax.random.PRNGKey(5), progress=False)
c = rcig.distill(rcfg.replace(kernel_backend="jax"), data, jax.random.PRNGKey(5), progress=False)
idx = np.asarray(a.meta["init_indices"])
out["rcig"] = {"used": [a.meta["devices_used"], b.meta["devices_used"]], "images": maxdiff(a.images, b.images),
               "targets": maxdiff(a.targets, b.targets), "loss": [a.meta["final_loss"], b.meta["final_loss"]],
               "moved": maxdiff(a.images, data.x_train[idx]), "skipped": [a.meta["skipped_updates"],
                                                                         b.meta["skipped_updates"]],
               "backends": [a.meta["config"]["kernel_backend"], c.meta["config"]["kernel_backend"]],
               "jax_kernels_images": maxdiff(c.images, b.images)}
# neural-tangents' head NTK on rows split over the 4 devices, against the plain product of the features
from jax.sharding import PartitionSpec as P
from jaxdistill import kernels
mesh = S.data_mesh(4)
ax = mesh.axis_names[0]
p1 = jax.random.normal(jax.random.PRNGKey(7), (16, 6))
p2 = jax.random.normal(jax.random.PRNGKey(8), (5, 6))
split_cross = jax.shard_map(lambda u: kernels.head_ntk(u, p2), mesh=mesh, in_specs=P(ax), out_specs=P(ax))(p1)
split_local = jax.shard_map(lambda u: kernels.head_ntk(u, u)[None], mesh=mesh, in_specs=P(ax), out_specs=P(ax))(p1)
out["head_ntk"] = {"cross": maxdiff(split_cross, p1 @ p2.T),
                   "local": max(maxdiff(split_local[i], p1[4 * i:4 * i + 4] @ p1[4 * i:4 * i + 4].T)
                                for i in range(4)),
                   "scale": float(np.max(np.abs(p1 @ p2.T)))}
try:
    jax.shard_map(lambda u: kernels.head_ntk(u, p2, implementation="ntk_vector_products"), mesh=mesh,
                  in_specs=P(ax), out_specs=P(ax))(p1)
    out["head_ntk_nvp_err"] = None
except ConfigError as e:
    out["head_ntk_nvp_err"] = str(e)
out["rcig_err"] = err(lambda: rcig.make_problem(rcfg.replace(real_batch=18), 10, (8, 8, 1), n_real=200))
out["t_rcig"] = time.perf_counter() - tic
print("JSON" + json.dumps(out))
''')


@pytest.fixture(scope="module")
def report():
    return run_on_host_devices(SCRIPT, 4, timeout=600)


def test_four_devices(report):
    assert report["devices"] == 4


def test_datm_t4_step_equals_mean_of_four_naive_trajectories(report):
    r = report["datm_step"]
    assert r["applied"] == [True, True]
    assert r["grad_spread"] > 0.1             # the four trajectories differ, so the mean is not trivial
    four, one, ref = r["loss"]
    assert abs(four - ref) < 1e-5 * max(1.0, ref) and abs(one - ref) < 1e-5 * max(1.0, ref)
    assert r["x_moved"] > 1e-2                # the images moved, so agreement means something
    assert r["x_four_vs_naive"] < 1e-3 * r["x_moved"] and r["x_one_vs_naive"] < 1e-3 * r["x_moved"]
    assert r["y_four_vs_naive"] < 1e-5 and r["lr_four_vs_naive"] < 1e-9


def test_datm_few_iterations_four_devices_match_one(report):
    r = report["datm_step"]
    assert r["few_moved"] > 1e-2
    assert r["few_x"] < 1e-3 * r["few_moved"] and r["few_y"] < 1e-5 and r["few_lr"] < 1e-9


def test_datm_distill_draws_t_trajectories_on_four_devices(report):
    r = report["datm_distill"]
    assert r["used"] == 4
    assert len(r["history"]) == 3 and all(0 < v < 10 for v in r["history"])
    assert r["lr_moved"] > 0                   # updates were applied
    # T=4 with 2 experts: each expert twice per iteration (two passes), start epochs in [0, U(0)=1)
    assert sorted(e for e, _ in r["draws"]) == [0, 0, 1, 1] and all(t == 0 for _, t in r["draws"])
    assert all(r["draws_t1"])                  # T=1 draws are exactly the single-trajectory ones


def test_datm_errors_name_value_and_allowed(report):
    assert "trajectories_per_iter=6" in report["datm_err_T"] and "4 devices" in report["datm_err_T"]
    assert "devices=8" in report["datm_err_dev"] and "1..4" in report["datm_err_dev"]


@pytest.mark.parametrize("batched", ["False", "True"])
def test_dance_classes_across_devices_match_one_device(report, batched):
    r = report[f"dance_{batched}"]
    assert r["used"] == [4, 1] and r["skipped"] == [0, 0]
    assert r["moved"] > 1e-2
    assert r["images"] < 1e-4 * max(1.0, r["moved"])


def test_dance_parallel_scan_falls_back_on_non_finite_step(report):
    r = report["dance_nan"]
    assert r["skipped"][0] == r["skipped"][1] >= 1   # class 3's steps are skipped on both paths
    assert r["same_nans"] and r["moved"] > 1e-3
    assert r["images"] < 1e-4 * max(1.0, r["moved"])


def test_rcig_real_batch_across_devices_matches_one_device(report):
    r = report["rcig"]
    assert r["used"] == [4, 1] and r["skipped"] == [0, 0]
    assert r["moved"] > 1e-4
    assert r["images"] < 1e-4 and r["targets"] < 1e-4
    assert abs(r["loss"][0] - r["loss"][1]) < 1e-4 * max(1.0, abs(r["loss"][1]))
    # the split run keeps neural-tangents' kernels (until 2026-12-03 it fell back to the plain-JAX ones), and
    # the plain-JAX kernels split over the devices give the same set
    assert r["backends"] == ["nt", "jax"] and r["jax_kernels_images"] < 1e-4
    msg = report["rcig_err"]
    assert msg is not None and "18" in msg and "4 devices" in msg and "multiple of 4" in msg


def test_nt_head_kernel_on_rows_split_across_devices_is_the_feature_product(report):
    """Inside shard_map the kernel of a device-invariant head was the sum over all devices' kernels (the
    transpose of an invariant input sums over the axis): 18 (absolute) away from phi1 phi2^T before the fix."""
    r = report["head_ntk"]
    assert r["scale"] > 1.0
    assert r["cross"] < 1e-5 * r["scale"] and r["local"] < 1e-5 * r["scale"]
    msg = report["head_ntk_nvp_err"]
    assert msg is not None and "ntk_vector_products" in msg and "jacobian_contraction" in msg
