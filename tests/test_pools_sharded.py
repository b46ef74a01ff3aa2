"""Expert stores, DANCE's pool and RCIG's pool with their nets split over 4 (forced host) devices equal one device's.

One subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=4 runs each setting with `devices`
0 (all four) and 1 (the single-device path, the oracle) and reports the largest differences as JSON.
K is picked not to be a multiple of 4 (6 experts, groups of 3; a pool of 3), so the padding path (copies of
the last net, sliced off, as the evaluator does) is what runs. Tiny shapes: 8x8 digits, width 8, depth 1.
"""
import textwrap

import pytest
from helpers.multidevice import run_on_host_devices

SCRIPT = textwrap.dedent(r'''
import dataclasses, json, os, tempfile, time
import numpy as np, jax
from jaxdistill.data import load_dataset, make_noisy_data
from jaxdistill.experts import ExpertStore, train_experts
from jaxdistill.nn import NetConfig, make_net
from jaxdistill.runlog import read_metrics
from jaxdistill.train import TrainConfig

def maxdiff(a, b):
    return max(float(np.max(np.abs(np.asarray(u, np.float64) - np.asarray(v, np.float64))))
               for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))

out = {"devices": jax.device_count()}
tic = time.perf_counter()
data = make_noisy_data(load_dataset("digits"), "symmetric:0.2", seed=0, subset=120)
x = np.asarray(data.x_train, np.float32)
net = make_net(NetConfig(10, width=8, depth=1))
# DSA: per-model augmentation keys must follow each net to its device.
cfg = TrainConfig(epochs=2, batch_size=40, lr=0.05, momentum=0.9, augment="dsa")
stores, curves = {}, {}
for dev in (0, 1):
    d = tempfile.mkdtemp()
    stores[dev] = train_experts(net, x, data.y_noisy, cfg, 6, jax.random.PRNGKey(1), d, {"t": 1}, progress=False,
                                group_size=3, devices=dev)
    curves[dev] = [(r["stage"].split("/")[-1], r["step"], r["loss"]) for r in read_metrics(d)]
    out[f"store_json_{dev}"] = json.load(open(os.path.join(d, "store.json")))
a, b = stores[0], stores[1]
out["experts"] = {"n": [a.num_experts, b.num_experts], "epochs": [a.epochs, b.epochs],
                  "max_diff": max(maxdiff(a.flat(e), b.flat(e)) for e in range(6)),
                  "moved": maxdiff(b.flat(5)[0], b.flat(5)[-1]),
                  "curve_steps": [[c[:2] for c in curves[0]], [c[:2] for c in curves[1]]],
                  "curve_loss_diff": max(abs(u[2] - v[2]) for u, v in zip(curves[0], curves[1]))}
out["same_store_json"] = out.pop("store_json_0") == out.pop("store_json_1")
# interrupted on 4 devices after group 0's first epoch, resumed on one: the same store
class Stop(Exception):
    pass
def stop_at(g, e):
    if (g, e) == (0, 1):
        raise Stop()
d = tempfile.mkdtemp()
try:
    train_experts(net, x, data.y_noisy, cfg, 6, jax.random.PRNGKey(1), d, {"t": 1}, progress=False, group_size=3,
                  devices=0, on_epoch=stop_at)
except Stop:
    pass
half = ExpertStore.open(d, allow_incomplete=True).groups_done
c = train_experts(net, x, data.y_noisy, cfg, 6, jax.random.PRNGKey(1), d, {"t": 1}, progress=False, group_size=3,
                  devices=1)
out["resumed"] = {"groups_done_before": half, "max_diff": max(maxdiff(c.flat(e), b.flat(e)) for e in range(6))}
out["t_experts"] = time.perf_counter() - tic; tic = time.perf_counter()

from jaxdistill.methods import dance as D
from jaxdistill.configs.dance import DanceConfig
dcfg = DanceConfig(dataset="digits", ipc=1, iterations=1, factor=2, width=8, depth=1, pool_size=3, num_premodel=2,
                   pretrain_epochs=2, pretrain_batch=40, mean=(0.4,), std=(0.3,), preset="quick")
xn = (x - 0.4) / 0.3
pools = {dev: D.pretrain_pool(dataclasses.replace(dcfg, devices=dev), data, xn, jax.random.PRNGKey(2), net,
                              progress=False) for dev in (0, 1)}
out["dance_pool"] = {"theta0": maxdiff(pools[0][0], pools[1][0]), "thetaT": maxdiff(pools[0][1], pools[1][1]),
                     "shape": [int(jax.tree_util.tree_leaves(pools[0][1])[0].shape[0]),
                               int(jax.tree_util.tree_leaves(pools[1][1])[0].shape[0])],
                     "moved": maxdiff(pools[1][0], pools[1][1])}

out["t_dance"] = time.perf_counter() - tic; tic = time.perf_counter()
from jaxdistill.methods import rcig
from jaxdistill.configs.rcig import RCIGConfig
from jaxdistill.checkpoint import Checkpointer
from jaxdistill.sharding import data_mesh, is_sharded_along
rcfg = RCIGConfig(dataset="digits", ipc=1, width=4, depth=1, iterations=3, pool_size=3, real_batch=16, n_inner=3,
                  n_hinv=3, inner_lr=1e-2, hvp_lr=1e-2, tune_lr=False, preprocess="none", use_flip=False,
                  checkpoint_every=10, max_online_steps=5, preset="quick")
prob = rcig.make_problem(rcfg.replace(devices=1), 10, (8, 8, 1))
fresh = prob.init_state(np.zeros((10, 8, 8, 1)), np.zeros((10, 10)), jax.random.PRNGKey(0))
placed = rcig.place_pool(fresh, 4)
sets, ckpts = {}, {}
for dev in (0, 1):
    d = tempfile.mkdtemp()
    sets[dev] = rcig.distill(rcfg.replace(devices=dev), data, jax.random.PRNGKey(5), workdir=d, progress=False)
    tmpl = {"leaves": {f"{i:03d}": np.asarray(l) for i, l in enumerate(jax.tree_util.tree_leaves(fresh))}}
    ckpts[dev] = Checkpointer(os.path.join(d, "ckpt")).restore_latest(tmpl)[1]["leaves"]
n_before = len(jax.tree_util.tree_leaves(tuple(fresh[:4])))   # psi, opt, ema, ema_count come first
n_pool = len(jax.tree_util.tree_leaves((fresh.pool, fresh.pool_opt, fresh.pool_steps)))
pool = lambda lv: [lv[k] for k in sorted(lv)][n_before:n_before + n_pool]  # noqa: E731
out["rcig"] = {"used": [sets[0].meta["devices_used"], sets[1].meta["devices_used"]],
               "images": maxdiff(sets[0].images, sets[1].images),
               "ckpt_shapes_equal": ([np.shape(v) for v in ckpts[0].values()]
                                     == [np.shape(v) for v in ckpts[1].values()]),
               "pool_diff": maxdiff(pool(ckpts[0]), pool(ckpts[1])),
               "pool_moved": maxdiff(pool(ckpts[1])[:len(jax.tree_util.tree_leaves(fresh.pool))],
                                     jax.tree_util.tree_leaves(fresh.pool)),
               "split": all(is_sharded_along(l, data_mesh(4)) for l in jax.tree_util.tree_leaves(placed.pool)),
               "padded": int(placed.pool_steps.shape[0]),
               "unplaced": int(rcig.unplace_pool(placed, 3).pool_steps.shape[0])}
out["t_rcig"] = time.perf_counter() - tic
print("JSON" + json.dumps(out))
''')


@pytest.fixture(scope="module")
def report():
    return run_on_host_devices(SCRIPT, 4)


def test_experts_split_over_devices_equal_one_device(report):
    print({k: round(v, 1) for k, v in report.items() if k.startswith("t_")})
    assert report["devices"] == 4
    e = report["experts"]
    assert e["n"] == [6, 6] and e["epochs"] == [[0, 1, 2], [0, 1, 2]]
    assert e["moved"] > 1e-3          # training happened, so equality is not trivial
    assert e["max_diff"] < 1e-5       # float reassociation only (vmap over a sharded axis vs lax.map)
    # the metrics log of each group covers its 3 nets, not the padding copy
    assert e["curve_steps"][0] == e["curve_steps"][1] and len(e["curve_steps"][0]) == 4
    assert e["curve_loss_diff"] < 1e-5
    assert report["same_store_json"]  # the device count is not part of the store
    # a store interrupted on 4 devices resumes on one and ends as the one-device store
    assert report["resumed"]["groups_done_before"] == 0 and report["resumed"]["max_diff"] < 1e-5


def test_dance_pool_split_over_devices_equals_one_device(report):
    p = report["dance_pool"]
    assert p["shape"] == [3, 3]
    assert p["moved"] > 1e-3
    assert p["theta0"] == 0.0 and p["thetaT"] < 1e-5


def test_rcig_pool_split_over_devices_equals_one_device(report):
    r = report["rcig"]
    assert r["used"] == [4, 1]
    assert r["split"] and r["padded"] == 4 and r["unplaced"] == 3  # 3 models padded to 4, one per device
    assert r["ckpt_shapes_equal"]    # checkpoints keep the one-device layout (pool of 3)
    assert r["pool_moved"] > 1e-4    # the online pool training happened
    assert r["pool_diff"] < 1e-4 and r["images"] < 1e-4
