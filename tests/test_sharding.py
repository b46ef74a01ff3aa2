"""jaxdistill.sharding on 4 forced host CPU devices against single-device / NumPy oracles.

The main pytest process has already initialised JAX with one CPU device, so the multi-device checks run
once in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=4 and report numbers as JSON;
each test below asserts one part of that report. A few single-device checks run in-process.
"""
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.multidevice import run_on_host_devices

from jaxdistill import sharding as S
from jaxdistill.errors import ConfigError

SCRIPT = textwrap.dedent(r'''
import json, re
import jax, jax.numpy as jnp, numpy as np, chex
from jaxdistill import sharding as S, train as T
from jaxdistill.errors import ConfigError
from jaxdistill.nn import NetConfig, make_net

out = {"devices": len(jax.devices())}
def maxdiff(a, b):
    return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v))))
               for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))

# --- models axis: the one training loop ---
net = make_net(NetConfig(3, width=4, depth=1))
rng = np.random.default_rng(0)
x = rng.uniform(size=(16, 8, 8, 1)).astype(np.float32)
y = rng.integers(0, 3, 16)
cfg = T.TrainConfig(epochs=2, batch_size=8, lr=0.1, momentum=0.9)
key = jax.random.PRNGKey(3)
mesh = S.model_mesh()
ref4 = T.train_models(net, x, y, cfg, key, 4)
sh4 = T.train_models_sharded(net, x, y, cfg, key, 4, mesh=mesh)
out["train4_maxdiff"] = maxdiff(ref4.params, sh4.params)
out["train4_moved"] = maxdiff(ref4.params, T.init_state(net, cfg, key, 4, (8, 8, 1),
                                                         T.make_optimizer(cfg, 4)).params)
out["train4_loss_maxdiff"] = float(np.max(np.abs(np.array(ref4.history["loss"]) - np.array(sh4.history["loss"]))))
out["train4_sharded"] = all(S.is_sharded_along(l, mesh) for l in jax.tree_util.tree_leaves(sh4.params))
out["train4_spec"] = [str(a) for a in jax.tree_util.tree_leaves(sh4.params)[0].sharding.spec]
# partitioned along K with no communication between models
tx = T.make_optimizer(cfg, 4)
st = S.shard_models(T._initial_state(net, jnp.asarray(x), cfg, key, 4), mesh)
t = jnp.asarray(T.as_targets(y, 3))
hlo = T.make_epoch_fn(net, cfg, 16, tx).lower(st, S.replicate(jnp.asarray(x), mesh), S.replicate(t, mesh),
                                              1).compile().as_text()
out["collectives"] = sorted(set(re.findall(r"all-gather|all-reduce|collective-permute|all-to-all|reduce-scatter",
                                           hlo)))
ref3 = T.train_models(net, x, y, cfg, key, 3, snapshots=True)
seen = []
sh3 = T.train_models_sharded(net, x, y, cfg, key, 3, mesh=mesh, snapshots=True,
                             on_epoch=lambda e, st: seen.append(int(st.step.shape[0])))
out["train3_callback_k"] = seen
out["train3_maxdiff"] = maxdiff(ref3.params, sh3.params)
out["train3_snap_maxdiff"] = maxdiff(ref3.snapshots, sh3.snapshots)
out["train3_shapes"] = [list(np.shape(sh3.history["loss"])), int(jax.tree_util.tree_leaves(sh3.params)[0].shape[0]),
                        len(sh3.snapshots)]
try:
    S.shard_models({"w": jnp.zeros((3, 2))}, mesh)
    out["shard_err"] = None
except ConfigError as e:
    out["shard_err"] = str(e)

# --- data axis: mean gradient of a least-squares loss vs the closed form ---
dmesh = S.data_mesh()
W = rng.normal(size=(3, 5)).astype(np.float32)
X = rng.normal(size=(12, 5)).astype(np.float32)
Y = rng.normal(size=(12, 3)).astype(np.float32)
lsq = lambda w, b: 0.5 * jnp.mean(jnp.sum((b[0] @ w.T - b[1]) ** 2, -1))
loss, g = jax.jit(lambda w, b: S.sharded_mean_grad(lsq, w, b, dmesh))(jnp.asarray(W), (jnp.asarray(X), jnp.asarray(Y)))
R = X @ W.T - Y
out["mg_loss"] = [float(loss), float(0.5 * np.mean(np.sum(R ** 2, -1)))]
out["mg_grad_maxdiff"] = float(np.max(np.abs(np.asarray(g) - R.T @ X / 12)))
try:
    S.sharded_mean_grad(lsq, W, (X[:6], Y[:6]), dmesh)
    out["mg_err"] = None
except ConfigError as e:
    out["mg_err"] = str(e)

# --- trajectories: mean of T per-trajectory (loss, grad) vs a NumPy loop ---
A = rng.normal(size=(8, 4, 5)).astype(np.float32)
B = rng.normal(size=(8, 4)).astype(np.float32)
w0 = rng.normal(size=(5,)).astype(np.float32)
traj = lambda per, w, s: jax.value_and_grad(lambda v: s * 0.5 * jnp.sum((per[0] @ v - per[1]) ** 2))(w)
for vec in (False, True):
    ml, mgr, per_l = S.sharded_trajectory_grads(traj, (jnp.asarray(A), jnp.asarray(B)), dmesh, jnp.asarray(w0),
                                                jnp.float32(2.0), vectorize=vec)
    ls = [2.0 * 0.5 * np.sum((A[i] @ w0 - B[i]) ** 2) for i in range(8)]
    gs = [2.0 * A[i].T @ (A[i] @ w0 - B[i]) for i in range(8)]
    out[f"traj_{vec}"] = [abs(float(ml) - float(np.mean(ls))) / float(np.mean(ls)),
                          float(np.max(np.abs(np.asarray(mgr) - np.mean(gs, 0)))),
                          float(np.max(np.abs(np.asarray(per_l) - np.array(ls)))), float(np.mean(ls))]

# --- classes: C=10 on 4 devices (padded) vs a Python loop of jax.grad on one device ---
cmesh = S.class_mesh()
C, ipc = 10, 2
syn = rng.normal(size=(C, ipc, 3)).astype(np.float32)
mu = rng.normal(size=(C, 4)).astype(np.float32)
Wc = rng.normal(size=(3, 4)).astype(np.float32)
def loss_c(s_c, c, mu_c, w):
    f = jnp.tanh(s_c @ w).mean(0)
    return jnp.sum((mu_c - f) ** 2) * (1.0 + c)
ls, gs = jax.jit(lambda *a: S.sharded_class_grads(loss_c, a[:3], cmesh, a[3]))(
    jnp.asarray(syn), jnp.arange(C), jnp.asarray(mu), jnp.asarray(Wc))
ref_l = [float(loss_c(syn[c], c, mu[c], Wc)) for c in range(C)]
ref_g = np.stack([np.asarray(jax.grad(loss_c)(jnp.asarray(syn[c]), c, jnp.asarray(mu[c]), jnp.asarray(Wc)))
                  for c in range(C)])
np_l = [float(np.sum((mu[c] - np.tanh(syn[c] @ Wc).mean(0)) ** 2) * (1 + c)) for c in range(C)]
out["cls_shapes"] = [list(ls.shape), list(gs.shape)]
out["cls_loss_maxdiff"] = float(np.max(np.abs(np.asarray(ls) - np.array(np_l))))
out["cls_grad_maxdiff"] = float(np.max(np.abs(np.asarray(gs) - ref_g)))
out["cls_grad_scale"] = float(np.max(np.abs(ref_g)))
# --- DATM's own matching loss: 4 trajectories across 4 devices vs a one-device loop ---
from jax.flatten_util import ravel_pytree
from jaxdistill.methods import datm
dnet = make_net(NetConfig(3, width=4, depth=1))
th, unravel = ravel_pytree(dnet.init(jax.random.PRNGKey(0), (8, 8, 1)))
apply_flat = lambda t_, xb: dnet.apply(unravel(t_), xb)
T0 = th[None] + 0.05 * jax.random.normal(jax.random.PRNGKey(1), (4, th.size))
TS = T0 + 0.05 * jax.random.normal(jax.random.PRNGKey(2), (4, th.size))
KS = jax.random.split(jax.random.PRNGKey(3), 4)
xs = jax.random.normal(jax.random.PRNGKey(4), (6, 8, 8, 1))
ys = jax.random.normal(jax.random.PRNGKey(5), (6, 3))
lr = jnp.float32(0.05)
def traj_fn(per, x_, y_, lr_):
    t0, ts, k = per
    idx = datm.batch_indices(k, 6, 3, 2)
    keys = jax.random.split(k, 2)
    return jax.value_and_grad(lambda a, b, c: datm.matching_loss(apply_flat, a, b, c, t0, ts, idx, keys,
                                                                 use_dsa=False), argnums=(0, 1, 2))(x_, y_, lr_)
ml, mg, _ = jax.jit(lambda *a: S.sharded_trajectory_grads(traj_fn, a[:3], dmesh, *a[3:]))(T0, TS, KS, xs, ys, lr)
refs = [jax.jit(traj_fn)((T0[i], TS[i], KS[i]), xs, ys, lr) for i in range(4)]
ref_l = np.mean([float(r[0]) for r in refs])
ref_g = [np.mean([np.asarray(r[1][j]) for r in refs], 0) for j in range(3)]
out["datm_traj"] = [abs(float(ml) - ref_l), maxdiff(mg, ref_g), float(max(np.abs(g).max() for g in ref_g))]
print("JSON" + json.dumps(out))
''')


@pytest.fixture(scope="module")
def report():
    return run_on_host_devices(SCRIPT, 4, timeout=300)


def test_four_devices(report):
    assert report["devices"] == 4


def test_train_models_sharded_matches_single_device(report):
    assert report["train4_moved"] > 1e-3           # training changed the params, so agreement means something
    assert report["train4_maxdiff"] < 1e-5
    assert report["train4_loss_maxdiff"] < 1e-5
    assert report["train4_sharded"] and report["train4_spec"] == ["models"]
    assert report["collectives"] == []             # the K models never talk to each other


def test_train_models_sharded_pads_indivisible_k(report):
    assert report["train3_maxdiff"] < 1e-5
    assert report["train3_snap_maxdiff"] < 1e-5
    assert report["train3_shapes"] == [[2, 3], 3, 3]   # (epochs, K) losses, K params, init + 2 epochs
    assert report["train3_callback_k"] == [3, 3]        # on_epoch sees K models, not the padded 4


def test_shard_models_error_names_k_and_devices(report):
    msg = report["shard_err"]
    assert msg is not None and "K=3" in msg and "4 devices" in msg and "pad=True" in msg


def test_sharded_mean_grad_closed_form(report):
    a, b = report["mg_loss"]
    assert abs(a - b) < 1e-5 * max(1.0, abs(b))
    assert report["mg_grad_maxdiff"] < 1e-5
    assert report["mg_err"] is not None and "6 rows" in report["mg_err"] and "multiple of 4" in report["mg_err"]


@pytest.mark.parametrize("vec", ["False", "True"])
def test_sharded_trajectory_grads_numpy_loop(report, vec):
    rel_loss, grad_diff, per_diff, scale = report[f"traj_{vec}"]
    assert scale > 1.0
    assert rel_loss < 1e-5 and grad_diff < 1e-4 and per_diff < 1e-4


def test_sharded_class_grads_padded_classes(report):
    assert report["cls_shapes"] == [[10], [10, 2, 3]]
    assert report["cls_loss_maxdiff"] < 1e-4
    assert report["cls_grad_scale"] > 1e-2 and report["cls_grad_maxdiff"] < 1e-5


# ---- single-device, in-process ----------------------------------------------------------------

def test_mesh_errors_name_the_value():
    with pytest.raises(ConfigError, match=r"n_devices=99 .*\[1, 1\]"):
        S.make_mesh("models", 99)
    with pytest.raises(ConfigError, match="leading"):
        S.shard_models({"a": jnp.zeros((2, 1)), "b": jnp.zeros((3, 1))}, S.model_mesh())


def test_one_device_mean_grad_equals_grad():
    mesh = S.data_mesh(1)
    w = jnp.arange(3.0)
    xb = jnp.asarray(np.random.default_rng(1).normal(size=(5, 3)), jnp.float32)
    f = lambda w, b: jnp.mean(jnp.sin(b @ w))  # noqa: E731
    loss, g = S.sharded_mean_grad(f, w, xb, mesh)
    chex.assert_trees_all_close((loss, g), jax.value_and_grad(f)(w, xb), atol=1e-6)
    # independent oracle: central finite differences
    eps = 1e-3
    fd = np.array([(f(w + eps * e, xb) - f(w - eps * e, xb)) / (2 * eps) for e in np.eye(3)])
    np.testing.assert_allclose(np.asarray(g), fd, atol=1e-3)


def test_pad_leading_repeats_last():
    t = S.pad_leading({"a": jnp.arange(3)}, 5)
    chex.assert_shape(t["a"], (5,))
    np.testing.assert_array_equal(np.asarray(t["a"]), [0, 1, 2, 2, 2])


def test_sharded_trajectory_grads_datm_matching_loss(report):
    loss_diff, grad_diff, grad_scale = report["datm_traj"]
    assert grad_scale > 1e-4
    assert loss_diff < 1e-5 and grad_diff < 1e-4 * max(1.0, grad_scale)
