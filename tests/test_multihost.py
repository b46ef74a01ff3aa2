"""Several processes (jax.distributed): one writer, the one-process result.

The end-to-end test starts two local CPU processes (one device each) joined by `jax.distributed.initialize`
(coordinator on a free localhost port; JAX 0.10.2's default `jax_cpu_collectives_implementation` is already
'gloo', so nothing needs setting). They run a DANCE distillation into one shared
workdir (pool store, orbax checkpoints, run.json, distilled.npz) with its nets and classes split over the
two processes' devices, then an evaluation whose nets are split the same way; the oracle is the same script
in one process. DATM (T=2 trajectories, expert store) and RCIG (split real batch and pool) are checked the
same way (their sets and workdir files). The unit tests check the process-0-only writes with
`jax.process_index` patched.
"""
import json
import os
import textwrap

import jax
import numpy as np
import pytest
from helpers.multiprocess import run_processes

SCRIPT = textwrap.dedent(r'''
import dataclasses, json, os
import numpy as np, jax
from jaxdistill.data import load_dataset, make_noisy_data
from jaxdistill.configs.dance import DanceConfig
from jaxdistill.evaluate import evaluate, get_protocol
from jaxdistill.methods import DistilledSet, distill
workdir = os.environ["WORKDIR"]
data = make_noisy_data(load_dataset("digits"), "symmetric:0.2", seed=0, subset=120)
# pool of 3 over 2 devices: the padded models path; batched_classes: the class-split view
cfg = DanceConfig(dataset="digits", ipc=1, iterations=2, factor=2, width=8, depth=1, batch_real=6, pool_size=3,
                  num_premodel=2, pretrain_epochs=1, pretrain_batch=40, checkpoint_every=1, mean=(0.4,), std=(0.3,),
                  iter_calib=0, batched_classes=True, preset="quick")
ds = distill("dance", cfg, data, jax.random.PRNGKey(2), workdir=workdir, progress=False)
p = get_protocol("standard", num_images=ds.images.shape[0], num_classes=10, image_size=8, preset="quick", width=8)
p = dataclasses.replace(p, train=p.train.replace(steps=6))
r = evaluate(ds, data, p, jax.random.PRNGKey(3), k=3)
print("JSON" + json.dumps({"process": jax.process_index(), "processes": jax.process_count(),
      "devices": jax.device_count(), "used": ds.meta["devices_used"], "images": np.asarray(ds.images).ravel().tolist(),
      "accs": list(map(float, r.accs))}))
''')


def _files(d):
    """The workdir's files, the pool store's and the checkpoint steps (orbax names its data files by hash)."""
    return (sorted(f for f in os.listdir(d) if f != "tb"), sorted(os.listdir(os.path.join(d, "pool"))),
            sorted(os.listdir(os.path.join(d, "ckpt"))))


@pytest.mark.slow
def test_two_processes_distill_and_evaluate_like_one(tmp_path):
    one = run_processes(SCRIPT, 1, env={"WORKDIR": str(tmp_path / "one")})[0]
    two = run_processes(SCRIPT, 2, env={"WORKDIR": str(tmp_path / "two")})
    assert [o["process"] for o in two] == [0, 1] and {o["processes"] for o in two} == {2}
    assert one["devices"] == 1 and {o["devices"] for o in two} == {2} and {o["used"] for o in two} == {2}
    # both processes hold the whole set (gathered), equal to each other and to one process's
    np.testing.assert_array_equal(two[0]["images"], two[1]["images"])
    np.testing.assert_allclose(two[0]["images"], one["images"], atol=1e-5)
    assert two[0]["accs"] == two[1]["accs"]
    np.testing.assert_allclose(two[0]["accs"], one["accs"], atol=1e-6)
    # one writer: the same files as one process, and every metrics line once
    a, b = tmp_path / "one", tmp_path / "two"
    assert _files(str(a)) == _files(str(b))
    rows = lambda d: [(r["stage"], r["step"]) for r in map(json.loads, open(d / "metrics.jsonl"))]  # noqa: E731
    assert rows(a) == rows(b) and len(rows(a)) > 0
    assert json.load(open(a / "run.json")) == json.load(open(b / "run.json"))
    from jaxdistill.methods.base import DistilledSet

    np.testing.assert_allclose(DistilledSet.load(str(b / "distilled.npz")).images, np.reshape(one["images"],
                               DistilledSet.load(str(a / "distilled.npz")).images.shape), atol=1e-5)


OTHERS = {
    # T=2 trajectories: split over the two processes' devices; 3 experts over 2 devices: padded
    "datm": r"""
from jaxdistill.configs.datm import get_config
cfg = get_config("digits", 1, "quick").replace(
    width=8, depth=1, iterations=2, syn_steps=3, batch_syn=10, max_start_epoch=2, current_max_start_epoch=1,
    expansion_end_epoch=20, expert_epochs=1, num_experts=3, expert_train_epochs=2, expert_batch=100,
    expert_augment="none", expert_sam_rho=0.0, checkpoint_every=1, trajectories_per_iter=2)
""",
    # real batch of 16 split over 2 processes, pool of 3 padded to 4 and split
    "rcig": r"""
from jaxdistill.configs.rcig import RCIGConfig
cfg = RCIGConfig(dataset="digits", ipc=1, width=4, depth=1, iterations=3, pool_size=3, real_batch=16, n_inner=3,
                 n_hinv=3, inner_lr=1e-2, hvp_lr=1e-2, tune_lr=False, preprocess="none", use_flip=False,
                 checkpoint_every=2, max_online_steps=5, kernel_backend="jax", preset="quick")
"""}
OTHER_RUN = textwrap.dedent(r'''
ds = distill(METHOD, cfg, data, jax.random.PRNGKey(5), workdir=os.environ["WORKDIR"], progress=False)
print("JSON" + json.dumps({"process": jax.process_index(), "used": ds.meta["devices_used"],
      "images": np.asarray(ds.images).ravel().tolist(), "targets": np.asarray(ds.targets).ravel().tolist(),
      "lr": ds.lr}))
''')


@pytest.mark.slow
@pytest.mark.parametrize("method", ["datm", "rcig"])
def test_two_processes_datm_rcig_like_one(tmp_path, method):
    head = ("import json, os\nimport numpy as np, jax\nfrom jaxdistill.data import load_dataset, make_noisy_data\n"
            "from jaxdistill.methods import distill\n"
            "data = make_noisy_data(load_dataset('digits'), 'symmetric:0.2', seed=0, subset=200)\n"
            f"METHOD = {method!r}\n")
    script = head + textwrap.dedent(OTHERS[method]) + OTHER_RUN
    one = run_processes(script, 1, env={"WORKDIR": str(tmp_path / "one")})[0]
    two = run_processes(script, 2, env={"WORKDIR": str(tmp_path / "two")})
    assert one["used"] == 1 and [o["used"] for o in two] == [2, 2]
    for k in ("images", "targets"):
        np.testing.assert_array_equal(two[0][k], two[1][k])
        np.testing.assert_allclose(two[0][k], one[k], atol=1e-5)
    assert two[0]["lr"] == two[1]["lr"] and (one["lr"] is None) == (two[0]["lr"] is None)
    if one["lr"] is not None:
        assert abs(two[0]["lr"] - one["lr"]) < 1e-7
    assert sorted(os.listdir(tmp_path / "one")) == sorted(os.listdir(tmp_path / "two"))


@pytest.mark.parametrize("rank", [0, 1])
def test_only_process_zero_writes(tmp_path, monkeypatch, rank):
    from jaxdistill import checkpoint as ck
    from jaxdistill.methods.base import DistilledSet
    from jaxdistill.runlog import MetricsLog
    from jaxdistill.sharding import is_primary

    monkeypatch.setattr(jax, "process_index", lambda: rank)
    assert is_primary() == (rank == 0)
    ck.atomic_write_json(str(tmp_path / "a.json"), {"x": 1})
    ck.atomic_write_text(str(tmp_path / "b.txt"), "t")
    ck.atomic_write_bytes(str(tmp_path / "c.bin"), b"b")
    ck.atomic_save_npz(str(tmp_path / "d.npz"), x=np.zeros(2))
    DistilledSet(images=np.zeros((2, 4, 4, 1), np.float32), labels=np.arange(2), method="toy").save(
        str(tmp_path / "e.npz"))
    log = MetricsLog(str(tmp_path), "s", tensorboard=False)
    log.log(1, loss=0.5)
    log.close()
    written = sorted(os.listdir(tmp_path))
    if rank == 0:
        assert written == ["a.json", "b.txt", "c.bin", "d.npz", "e.npz", "metrics.jsonl"]
        assert json.load(open(tmp_path / "a.json")) == {"x": 1}
    else:
        assert written == []  # not even a temporary file left behind


def test_to_host_copies_local_arrays():
    from jaxdistill.sharding import to_host

    out = to_host({"a": jax.numpy.arange(3.0), "b": np.ones(2)})
    assert isinstance(out["a"], np.ndarray) and out["a"].tolist() == [0.0, 1.0, 2.0] and out["b"].tolist() == [1, 1]
