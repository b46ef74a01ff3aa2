"""Expert store: round trip, memory-mapped reads, resume after interruption, meta mismatch refused."""
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxdistill.errors import ConfigError, StoreError
from jaxdistill.experts import ExpertStore, train_experts
from jaxdistill.nn import NetConfig, make_net
from jaxdistill.train import TrainConfig, train_models


def _data(n=64, c=3, seed=0):
    rng = np.random.RandomState(seed)
    x = rng.rand(n, 6, 6, 1).astype(np.float32)
    y = rng.randint(0, c, n).astype(np.int32)
    return x, y


NET = make_net(NetConfig(num_classes=3, width=4, depth=1))
# The study's expert recipe (DSA + GSAM) in the round-trip test; a plain SGD config elsewhere (faster compiles).
CFG_FTD = TrainConfig(epochs=3, batch_size=16, lr=0.05, augment="dsa", sam_rho=0.01, sam_alpha=0.3)
CFG = TrainConfig(epochs=3, batch_size=16, lr=0.05)
META = {"dataset": "toy", "noise": "symmetric:0.4"}


def test_round_trip_matches_in_memory_training(tmp_path):
    x, y = _data()
    key = jax.random.PRNGKey(3)
    store = train_experts(NET, x, y, CFG_FTD, 2, key, str(tmp_path), META, progress=False)
    assert store.num_experts == 2 and store.epochs == [0, 1, 2, 3]
    # The same run in memory (same key -> same group key) gives the same snapshots.
    ref = train_models(NET, x, y, CFG_FTD, jax.random.fold_in(key, 0), num_models=2, snapshots=True)
    for e in range(2):
        m = store.flat(e)
        assert isinstance(m, np.memmap) and m.shape == (4, store.num_params)
        for s in range(4):
            want = ravel_pytree(jax.tree_util.tree_map(lambda a: a[e], ref.snapshots[s]))[0]
            np.testing.assert_allclose(m[s], np.asarray(want), rtol=1e-6, atol=1e-7)
        chex.assert_trees_all_close(store.params(e, 3), jax.tree_util.tree_map(lambda a: a[e], ref.params),
                                    rtol=1e-6, atol=1e-7)
    # unravel is the inverse of ravel on the stored layout, and epochs differ (training happened)
    flat = store.flat_at(1, 2)
    np.testing.assert_array_equal(np.asarray(ravel_pytree(store.unravel(flat))[0]), flat)
    assert not np.allclose(store.flat(0)[0], store.flat(0)[3])
    with pytest.raises(StoreError, match="stored epochs"):
        store.params(0, 7)
    with pytest.raises(StoreError, match="allowed 0..1"):
        store.flat(2)
    # Reopen from disk with the right meta: same numbers.
    again = ExpertStore.open(str(tmp_path), expect_meta=META)
    np.testing.assert_array_equal(again.flat(1)[2], store.flat(1)[2])


def test_subset_of_epochs_and_groups(tmp_path):
    x, y = _data()
    key = jax.random.PRNGKey(1)
    store = train_experts(NET, x, y, CFG, 3, key, str(tmp_path), META, snapshot_epochs=[0, 3],
                          progress=False, group_size=2)
    assert store.epochs == [0, 3] and store.flat(2).shape == (2, store.num_params)
    # group 1 holds expert 2 alone, trained from fold_in(key, 1)
    ref = train_models(NET, x, y, CFG, jax.random.fold_in(key, 1), num_models=1, snapshots=True)
    want = ravel_pytree(jax.tree_util.tree_map(lambda a: a[0], ref.snapshots[3]))[0]
    np.testing.assert_allclose(store.flat(2)[1], np.asarray(want), rtol=1e-6, atol=1e-7)
    with pytest.raises(ConfigError, match="snapshot_epochs"):
        train_experts(NET, x, y, CFG, 1, key, str(tmp_path / "b"), META, snapshot_epochs=[0, 9], progress=False)


def test_interrupted_run_resumes_identically(tmp_path):
    x, y = _data()
    key = jax.random.PRNGKey(7)
    cfg = CFG.replace(momentum=0.9, epochs=4)  # momentum: the optimiser state must be resumed too
    full = train_experts(NET, x, y, cfg, 2, key, str(tmp_path / "full"), META, progress=False)

    class Crash(Exception):
        pass

    def crash_after_2(group, epoch):
        if epoch == 2:
            raise Crash()

    d = str(tmp_path / "cut")
    with pytest.raises(Crash):
        train_experts(NET, x, y, cfg, 2, key, d, META, progress=False, on_epoch=crash_after_2)
    with pytest.raises(StoreError, match="incomplete"):
        ExpertStore.open(d)
    seen = []
    resumed = train_experts(NET, x, y, cfg, 2, key, d, META, progress=False,
                            on_epoch=lambda g, e: seen.append(e))
    assert seen == [3, 4]  # only the missing epochs were trained
    for e in range(2):
        np.testing.assert_array_equal(np.asarray(resumed.flat(e)), np.asarray(full.flat(e)))
    assert not any(f.startswith("state_") for f in os.listdir(d))  # state removed once finished


def test_meta_mismatch_refused(tmp_path):
    x, y = _data()
    key = jax.random.PRNGKey(0)
    d = str(tmp_path)
    train_experts(NET, x, y, CFG, 1, key, d, META, progress=False)
    with pytest.raises(StoreError, match="noise: store has 'symmetric:0.4', run expects 'clean'"):
        ExpertStore.open(d, expect_meta={"noise": "clean"})
    # different labels (other noise draw) with the same meta dict -> labels fingerprint differs
    y2 = y.copy()
    y2[0] = (y2[0] + 1) % 3
    with pytest.raises(StoreError, match="labels_sha1"):
        train_experts(NET, x, y2, CFG, 1, key, d, META, progress=False)
    # different network
    net2 = make_net(NetConfig(num_classes=3, width=5, depth=1))
    with pytest.raises(StoreError, match="net"):
        train_experts(net2, x, y, CFG, 1, key, d, META, progress=False)
    with pytest.raises(StoreError, match="no expert store"):
        ExpertStore.open(str(tmp_path / "nothing"))
    info = json.load(open(os.path.join(d, "store.json")))
    assert info["meta"]["dataset"] == "toy" and info["meta"]["net"]["width"] == 4
