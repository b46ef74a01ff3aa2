"""The peers harness's glue without the originals (experiments/peers/): labels file, join by image content,
budget mapping both ways, importing a foreign set and evaluating it with jaxdistill's evaluator."""
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from experiments.peers import budget as B  # noqa: E402
from experiments.peers import import_set as I  # noqa: E402
from experiments.peers import labels as L  # noqa: E402


def test_label_export_equals_jaxdistill_noise_cli(tmp_path):
    from jaxdistill.cli import main

    rng = np.random.default_rng(3)
    y = rng.integers(0, 10, size=600).astype(np.int64)
    np.save(tmp_path / "y.npy", y)
    assert main(["noise", "--labels", str(tmp_path / "y.npy"), "--noise", "symmetric:0.4", "--classes", "10",
                 "--seed", "0", "--out", str(tmp_path / "cli.npy")]) == 0
    cli = np.load(tmp_path / "cli.npy")
    got = L.labels_from_array(str(tmp_path / "lab.npz"), y, "symmetric:0.4", 10, seed=0, dataset="fashion_mnist")
    back = L.read_labels(str(tmp_path / "lab.npz"))
    assert back["noisy"].shape == (600,) and np.array_equal(back["noisy"], cli)
    assert np.array_equal(got["noisy"], cli)
    assert np.array_equal(back["true"], y) and np.array_equal(back["indices"], np.arange(600))
    rate = float(np.mean(cli != y))
    assert abs(back["header"]["realized_rate"] - rate) < 1e-12
    assert 0.3 < rate < 0.5
    assert back["header"]["noise"] == "symmetric:0.4" and back["header"]["seed"] == 0


def test_write_labels_subset_matches_make_noisy_data(tmp_path):
    from jaxdistill.data.dataset import Dataset
    from jaxdistill.data import make_noisy_data
    from jaxdistill.noise import apply_noise

    rng = np.random.default_rng(0)
    x = rng.random((300, 6, 6, 1)).astype(np.float32)
    y = np.repeat(np.arange(10), 30).astype(np.int32)
    ds = Dataset(name="toy", x_train=x, y_train=y, x_test=x[:20], y_test=y[:20], num_classes=10,
                 class_names=[str(i) for i in range(10)])
    data = make_noisy_data(ds, "symmetric:0.6", seed=0, subset=100)
    lab = L.write_labels(str(tmp_path / "l.npz"), "toy", "symmetric:0.6", seed=0, subset=100, data=data)
    assert lab["indices"].shape == (100,) and len(set(lab["indices"].tolist())) == 100
    assert np.array_equal(lab["true"], y[lab["indices"]])
    assert np.array_equal(lab["noisy"], apply_noise(y[lab["indices"]], "symmetric:0.6", 10, seed=0).noisy)
    # the content keys address the subset's images
    assert np.array_equal(lab["hash64"], L.image_keys(x[lab["indices"]]))


def test_join_by_content_recovers_a_permutation():
    rng = np.random.default_rng(1)
    ref = rng.integers(0, 256, size=(80, 28, 28), dtype=np.uint8)
    ref[7] = ref[3]                       # one exact duplicate pair
    perm = rng.permutation(80)
    other = ref[perm]
    order = L.join_by_content(ref, other)
    assert np.array_equal(other[order], ref)
    inv = np.argsort(perm)
    same = order == inv
    assert same.sum() >= 78               # all but possibly the duplicate pair, which may swap
    assert L.duplicate_count(ref) == 2
    # float [0,1] images in NHWC give the same keys as their uint8 bytes
    assert np.array_equal(L.image_keys(ref[..., None] / 255.0), L.image_keys(ref))
    with pytest.raises(ValueError):
        L.join_by_content(ref, other[:-1])


def test_budget_dance_quick_both_ways():
    cfg = B.get_config("dance", "fashion_mnist", 10, "quick")
    m = B.to_original("dance", cfg)
    c, p = m["DANCE.py"], m["pretrain.py"]
    assert c["override"]["niter"] == 60 and c["override"]["depth"] == 3
    assert c["override"]["lr_img"] == pytest.approx(0.1)          # 0.01 * ipc
    assert c["flag"]["width"] == pytest.approx(16 / 128) and c["flag"]["ipc"] == 10
    assert c["flag"]["batch_real"] == 64 and c["flag"]["batch_syn_max"] == 100 and c["flag"]["factor"] == 1
    assert c["flag"]["num_premodel"] == 2 and c["flag"]["mom_img"] == 0.5
    assert p["override"]["pretrain_amount"] == 2 and p["override"]["pretrain_epochs"] == 2
    assert p["flag"]["batch_real"] == 64 and p["flag"]["weight_decay"] == 5e-4
    assert B.from_original("dance", m, "fashion_mnist", 10, "quick") == cfg
    cfg2 = cfg.replace(iterations=7, width=32, lr_img=0.3, pool_size=4, num_premodel=3)
    m2 = B.to_original("dance", cfg2)
    assert m2["DANCE.py"]["flag"]["width"] == 0.25 and m2["DANCE.py"]["override"]["niter"] == 7
    assert B.from_original("dance", m2, "fashion_mnist", 10, "quick") == cfg2
    assert B.fixed_mismatches("dance", cfg) == []
    ev = B.eval_settings("dance", "quick", 28, 5)
    assert ev["override"]["epochs"] == 100 and ev["width"] == 16


def test_budget_datm_quick_both_ways():
    cfg = B.get_config("datm", "fashion_mnist", 10, "quick")
    m = B.to_original("datm", cfg)
    b, y = m["buffer_FTD.py"], m["DATM_tesla.py"]
    assert b["flag"]["num_experts"] == 3 and b["flag"]["save_interval"] == 3     # experts saved at all
    assert b["flag"]["train_epochs"] == 5 and b["flag"]["batch_train"] == 128
    assert b["flag"]["rho_max"] == b["flag"]["rho_min"] == cfg.expert_sam_rho
    assert b["patch"] == {"net_width": 16, "net_depth": 3}
    assert y["yaml"]["Iteration"] == 50 and y["yaml"]["syn_steps"] == 10 and y["yaml"]["zca"] is True
    assert y["yaml"]["Sequential_Generation"] is True and y["yaml"]["max_start_epoch"] == 3
    assert B.from_original("datm", m, "fashion_mnist", 10, "quick") == cfg
    cfg2 = cfg.replace(iterations=9, syn_steps=4, num_experts=2, preprocess="none")
    m2 = B.to_original("datm", cfg2)
    assert m2["DATM_tesla.py"]["yaml"]["zca"] is False
    assert B.from_original("datm", m2, "fashion_mnist", 10, "quick") == cfg2
    assert [m.split(":")[0] for m in B.fixed_mismatches("datm", cfg)] == (
        [] if cfg.meta_grad == "tesla" else ["meta_grad"])     # the study ran DATM_tesla.py
    assert B.fixed_mismatches("datm", cfg.replace(meta_grad="tesla")) == []
    assert B.eval_settings("datm", "quick", 28, 5)["yaml"] == {"epoch_eval_train": 100, "num_eval": 5,
                                                               "batch_train": 128}
    assert "| `iterations` | DATM_tesla.py | `Iteration` | yaml |" in B.table("datm")


def _tiny_protocol(num_classes=10):
    from jaxdistill.evaluate import EvalProtocol
    from jaxdistill.nn import NetConfig
    from jaxdistill.train import TrainConfig

    return EvalProtocol("standard", NetConfig(num_classes, width=8, depth=2),
                        TrainConfig(epochs=2, batch_size=10, lr=0.01, momentum=0.9, augment="none"), "learned")


class _Test:
    def __init__(self, n=60, seed=0):
        rng = np.random.default_rng(seed)
        self.x_test = rng.random((n, 28, 28, 1)).astype(np.float32)
        self.y_test = np.arange(n) % 10
        self.num_classes = 10


def test_import_numpy_dance_set_and_evaluate(tmp_path):
    import jax

    from jaxdistill.evaluate import evaluate
    from jaxdistill.methods.base import DistilledSet

    rng = np.random.default_rng(2)
    imgs = rng.random((10, 1, 28, 28)).astype(np.float32)          # DANCE: NCHW pixels
    labs = np.arange(10)
    np.savez(tmp_path / "final_set.npz", images=imgs, labels=labs)
    s = I.import_dance(str(tmp_path / "final_set.npz"))
    assert s.images.shape == (10, 28, 28, 1) and s.target_kind == "hard"
    np.testing.assert_allclose(s.images[:, :, :, 0], (imgs[:, 0] - 0.2861) / 0.3530, rtol=1e-5, atol=1e-5)
    assert str(np.asarray(s.preprocessor["kind"])) == "meanstd"
    np.testing.assert_allclose(s.to_pixels()[..., 0], np.clip(imgs[:, 0], 0, 1), atol=1e-5)
    s.save(str(tmp_path / "d.npz"))
    back = DistilledSet.load(str(tmp_path / "d.npz"))
    assert back.method == "dance_original" and back.meta["import"]["space"] == "pixels"
    assert np.array_equal(back.labels, labs)
    r = evaluate(back, _Test(), _tiny_protocol(), jax.random.PRNGKey(0), k=2)
    accs = np.asarray(r.accs)
    assert accs.shape == (2,) and np.all((accs >= 0) & (accs <= 1)) and 0 <= r.mean <= 1


def test_import_numpy_datm_set_with_zca(tmp_path):
    import jax

    from jaxdistill.evaluate import evaluate
    from jaxdistill.preprocess import Preprocessor

    rng = np.random.default_rng(4)
    x_train = rng.random((50, 28, 28, 1)).astype(np.float32)
    imgs = rng.normal(size=(10, 1, 28, 28)).astype(np.float32)     # DATM: NCHW in ZCA space
    logits = rng.normal(size=(10, 10)).astype(np.float32)
    np.savez(tmp_path / "final_set.npz", images=imgs, labels=logits, lr=np.asarray(0.0123))
    s = I.import_datm(str(tmp_path / "final_set.npz"), x_train=x_train)
    assert s.target_kind == "soft_logits" and s.lr == pytest.approx(0.0123)
    assert np.array_equal(s.images[..., 0], imgs[:, 0])            # working space: kept as given
    assert np.array_equal(s.labels, logits.argmax(1)) and s.targets.shape == (10, 10)
    pre = Preprocessor.from_dict(s.preprocessor)
    assert pre.kind == "zca_datm"
    ref = I.fitted_preprocessor("zca_datm", x_train)
    np.testing.assert_allclose(pre.zca_mean, ref["zca_mean"], atol=1e-6)
    r = evaluate(s, _Test(), _tiny_protocol(), jax.random.PRNGKey(1), k=2)   # same shapes: no new compile
    accs = np.asarray(r.accs)
    assert accs.shape == (2,) and np.all((accs >= 0) & (accs <= 1))


def test_import_torch_saved_dance_file(tmp_path):
    torch = pytest.importorskip("torch")
    imgs = torch.rand(10, 1, 28, 28)
    labs = torch.arange(10)
    torch.save([imgs, labs], tmp_path / "data_60.pt")
    s = I.import_dance(str(tmp_path / "data_60.pt"))
    assert s.images.shape == (10, 28, 28, 1)
    np.testing.assert_allclose(s.images[..., 0], (imgs.numpy()[:, 0] - 0.2861) / 0.3530, atol=1e-5)
    assert np.array_equal(s.labels, np.arange(10))


def test_datm_yaml_reads_back_with_yacs_types(tmp_path):
    yaml = pytest.importorskip("yaml")
    from experiments.peers import run_peers as R

    cfg = B.get_config("datm", "fashion_mnist", 10, "quick")
    steps = R.original_commands("datm", cfg, python="py", peer_dir=str(tmp_path), labels="l.npz",
                                odir=str(tmp_path / "o"), seed=1, threads=2, noise="symmetric:0.4", k=5, budget="quick")
    assert [s[0] for s in steps] == ["buffer", "distill"]
    buf = steps[0][1]
    assert buf[buf.index("--num_experts") + 1] == "3" and buf[buf.index("--save_interval") + 1] == "3"
    assert "--zca" in buf and buf[buf.index("--patch") + 1] == "net_width=16"
    y = yaml.safe_load(open(tmp_path / "o" / "datm.yaml"))
    assert isinstance(y["lr_lr"], float) and y["lr_lr"] == pytest.approx(1e-5)   # '1e-05' would load as str
    assert y["Iteration"] == 50 and y["eval_it"] == 50 and y["skip_first_eva"] is True
    assert y["zca"] is True and y["epoch_eval_train"] == 100 and y["num_eval"] == 5
    assert y["dataset"] == "FashionMNIST" and y["noise_rate"] == pytest.approx(0.4)


def test_jaxdistill_ms_per_iter_from_chunked_metrics(tmp_path):
    import json

    from experiments.peers import run_peers as R

    rows = [{"stage": "distill_dance", "step": s, "wall_s": w} for s, w in
            [(1, 10.0), (2, 10.0), (3, 12.0), (4, 12.0), (5, 14.0), (6, 14.0)]]   # chunks of 2; first compiles
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ms, note = R._ms_per_iter_jax(str(tmp_path))
    assert ms == pytest.approx(1000.0) and "compile excluded" in note        # (14 - 10) s over steps 2..6
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps({**r, "wall_s": 5.0}) for r in rows) + "\n")
    ms, note = R._ms_per_iter_jax(str(tmp_path))
    assert ms == pytest.approx(5000.0 / 6) and "compile included" in note
    # rows with the loop's own chunk timing: the median of the chunks after the first (which compiled)
    timed = [{**r, "chunk_ms_per_iter": {10.0: 900.0, 12.0: 30.0, 14.0: 50.0, 16.0: 40.0}[r["wall_s"]]}
             for r in rows + [{"stage": "distill_dance", "step": 7, "wall_s": 16.0}]]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in timed) + "\n")
    ms, note = R._ms_per_iter_jax(str(tmp_path))
    assert ms == pytest.approx(40.0) and "median chunk time over 3 chunks" in note


def test_datm_yaml_values_take_the_yacs_default_types(tmp_path):
    from experiments.peers import run_peers as R

    (tmp_path / "DATM+ours" / "utils").mkdir(parents=True)
    (tmp_path / "DATM+ours" / "utils" / "cfg.py").write_text(
        "CFG.lr_img = 1000  # int in the original\nCFG.lr_y = 2.\nCFG.batch_syn = None\nCFG.zca = True\n")
    t = R.datm_default_types(str(tmp_path))
    assert t == {"lr_img": int, "lr_y": float, "batch_syn": type(None), "zca": bool}
    got = R.coerce_to_defaults({"lr_img": 100.0, "lr_y": 2, "batch_syn": 100, "zca": True}, t)
    assert got == {"lr_img": 100, "lr_y": 2.0, "batch_syn": 100, "zca": True}
    assert type(got["lr_img"]) is int and type(got["lr_y"]) is float
    with pytest.raises(SystemExit):
        R.coerce_to_defaults({"lr_img": 100.5}, t)


_SNAPSHOT_CHECK = r"""
import importlib.util, json, sys
import torch

def snapshot_survives_a_step():
    # buffer_FTD.py's way of storing an epoch: [p.detach().cpu() for p in net.parameters()]
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    snap = [p.detach().cpu() for p in net.parameters()]
    before = [s.clone() for s in snap]
    net(torch.ones(4, 3)).sum().backward()
    opt.step()
    return all(torch.equal(s, b) for s, b in zip(snap, before))

out = {"unpatched": snapshot_survives_a_step()}
spec = importlib.util.spec_from_file_location("launch", sys.argv[1])
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
m.install_torch_patches(1)
out["patched"] = snapshot_survives_a_step()
x = torch.ones(2, requires_grad=True)
(2 * x).cpu().sum().backward()
out["grad"] = x.grad.tolist()
print(json.dumps(out))
"""


def test_glue_cpu_copies_so_datm_expert_snapshots_do_not_alias(tmp_path):
    """Issue 29: on a CPU tensor torch's `.cpu()` returns the tensor itself, so DATM's expert snapshots
    (`p.detach().cpu()`) followed the live parameters, every stored epoch was the last one and DATM_tesla
    skipped every update (matching loss x/0 = inf). The glue makes `.cpu()` a copy, as on the GPU."""
    import json
    import subprocess

    from experiments.peers.venv import venv_python

    py = venv_python("torch")
    if not os.path.exists(py):
        pytest.skip(f"no torch venv at {py} (python experiments/peers/venv.py torch)")
    script = tmp_path / "check.py"
    script.write_text(_SNAPSHOT_CHECK)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([py, str(script), os.path.join(ROOT, "experiments", "peers", "glue", "launch.py")],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["unpatched"] is False  # the aliasing the glue has to undo (plain torch on the CPU)
    assert out["patched"] is True
    assert out["grad"] == [2.0, 2.0]  # the copy stays differentiable, like a device copy


# ---------------------------------------------------------------------------------------------------- RCIG
def test_budget_rcig_quick_both_ways():
    cfg = B.get_config("rcig", "fashion_mnist", 10, "quick")
    m = B.to_original("rcig", cfg)
    f, j = m["distill_dataset.py"], m["config.json"]["json"]
    assert f["flag"] == {"n_images": 10, "max_steps": 30, "width": 16, "skip_tune": False}
    assert f["patch"] == {"real_batch": 128}                      # the script hard-codes 1024
    assert j["pool_model_count"] == 4 and j["n_inner_steps"] == 5 and j["n_hinv_steps"] == 5
    assert j["n_max_steps_pool"] == 16 and j["max_online_steps"] == 100 and j["use_flip"] is False
    assert j["l2_rate"] == pytest.approx(5e-4) and j["softplus_temp"] == 60.0 and j["learn_labels"] is True
    assert j["proto_learning_rate"] == pytest.approx(0.003) and j["pool_learning_rate"] == pytest.approx(5e-5)
    assert B.from_original("rcig", m, "fashion_mnist", 10, "quick") == cfg
    cfg2 = cfg.replace(iterations=7, width=32, pool_size=2, n_inner=3, tune_lr=False, real_batch=64)
    m2 = B.to_original("rcig", cfg2)
    assert m2["distill_dataset.py"]["flag"]["skip_tune"] is True and m2["distill_dataset.py"]["flag"]["width"] == 32
    # without the search the lrs are delivered to run_rcig (glue --set); with it they are the original's start
    assert m2["distill_dataset.py"]["patch"] == {"real_batch": 64, "inner_lr": cfg.inner_lr, "hvp_lr": cfg.hvp_lr}
    assert m2["config.json"]["json"]["n_inner_steps"] == 3
    assert B.from_original("rcig", m2, "fashion_mnist", 10, "quick") == cfg2
    assert B.fixed_mismatches("rcig", cfg2) == []
    # the CPU preset's lr-search start and try cap differ from the original's hard-coded ones; the
    # preprocessing (mean/std for Fashion-MNIST), depth, temperature lr, EMA and adapt interval agree
    mism = B.fixed_mismatches("rcig", cfg)
    assert sorted(s.split(":")[0] for s in mism) == ["hvp_lr", "inner_lr", "tune_max_tries"]
    assert B.fixed_mismatches("rcig", cfg.replace(inner_lr=1e-5, hvp_lr=5e-5, tune_max_tries=3))[0].startswith(
        "tune_max_tries")
    paper = B.get_config("rcig", "cifar10", 10, "paper")        # ZCA + depth 3 + flip: preprocess differs
    assert any(s.startswith("preprocess:") for s in B.fixed_mismatches("rcig", paper))
    assert B.eval_settings("rcig", "quick", 28, 5)["nets"] == 0  # distill_dataset.py evaluates nothing


def _rcig_peer(tmp_path):
    d = tmp_path / "peer" / "RCIG+ours" / "configs_final"
    d.mkdir(parents=True)
    base = {"has_bn": False, "pool_model_count": 30, "l2_rate": 0.0005, "n_inner_steps": 20, "n_hinv_steps": 20,
            "max_online_steps": 100, "n_max_steps_pool": 16, "learn_labels": True, "pool_learning_rate": 5e-05,
            "proto_learning_rate": 0.003, "softplus_temp": 60, "use_flip": False, "linearize": True,
            "direct_batch_sizes": [None, None], "checkpoint_iters": [50, 100]}
    import json

    (d / "depth_3_no_flip.txt").write_text(json.dumps(base))
    return str(tmp_path / "peer"), base


def test_rcig_commands_and_config_json(tmp_path):
    import json

    from experiments.peers import run_peers as R

    peer, base = _rcig_peer(tmp_path)
    cfg = B.get_config("rcig", "fashion_mnist", 10, "quick").replace(iterations=5)
    steps = R.original_commands("rcig", cfg, python="py", peer_dir=peer, labels="l.npz", odir=str(tmp_path / "o"),
                                seed=3, threads=1, noise="symmetric:0.4", k=2, budget="quick")
    assert [s[0] for s in steps] == ["distill"] and steps[0][2].endswith("own_eval.json")
    argv = steps[0][1]
    assert argv[argv.index("--script") + 1] == "RCIG+ours/distill_dataset.py"
    assert argv[argv.index("--set") + 1] == "real_batch=128"
    rest = argv[argv.index("--") + 1:]
    val = lambda k: rest[rest.index(k) + 1]  # noqa: E731
    assert val("--n_images") == "10" and val("--max_steps") == "5" and val("--width") == "16"
    assert val("--random_seed") == "3" and val("--skip_tune") == "False" and val("--dataset_name") == "fashion_mnist"
    assert val("--output_dir") == "rcig_out" and val("--config_path") == "rcig_config.json"
    assert val("--noise_type") == "symmetric" and val("--noise_rate") == "0.4"
    got = json.load(open(tmp_path / "o" / "rcig_config.json"))
    assert got["pool_model_count"] == 4 and got["n_inner_steps"] == 5 and got["n_hinv_steps"] == 5
    assert got["direct_batch_sizes"] == [None, None] and got["linearize"] is True   # the original's keys kept
    assert set(got) == set(base)
    with pytest.raises(SystemExit):
        R.rcig_config_json(peer, {"pool_model_cuont": 3})


def test_import_rcig_saved_set_and_evaluate(tmp_path):
    import pickle

    import jax

    from jaxdistill.evaluate import EvalProtocol, evaluate, prepare_for_protocol
    from jaxdistill.methods.base import DistilledSet
    from jaxdistill.nn import NetConfig
    from jaxdistill.train import TrainConfig

    rng = np.random.default_rng(5)
    pix = rng.random((10, 28, 28, 1)).astype(np.float32)            # RCIG: NHWC pixels (preprocessing undone)
    y = (np.eye(10) - 0.1 + 0.05 * rng.normal(size=(10, 10))).astype(np.float32)  # learned regression targets
    # the script's own pickle (a non-array entry like its ConfigDict) and the glue's numpy copy
    with open(tmp_path / "distilled_dataset_vis.pkl", "wb") as f:
        pickle.dump({"coreset_images": pix, "coreset_labels": y, "dataset": {"name": "fashion_mnist"}}, f)
    np.savez(tmp_path / "final_set.npz", images=pix, labels=y, images_working=(pix - 0.2861) / 0.3530)
    a = I.import_rcig(str(tmp_path / "distilled_dataset_vis.pkl"))
    b = I.import_rcig(str(tmp_path / "final_set.npz"), use_flip=True)
    for s in (a, b):
        assert s.target_kind == "regression" and s.method == "rcig_original"
        np.testing.assert_allclose(s.images, (pix - 0.2861) / 0.3530, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(s.targets, y)
        assert np.array_equal(s.labels, y.argmax(1))
        assert str(np.asarray(s.preprocessor["kind"])) == "meanstd"
    assert a.meta["use_flip"] is False and b.meta["use_flip"] is True
    np.testing.assert_allclose(b.images, np.load(tmp_path / "final_set.npz")["images_working"], atol=1e-5)
    b.save(str(tmp_path / "d.npz"))
    back = DistilledSet.load(str(tmp_path / "d.npz"))
    proto = EvalProtocol("rcig", NetConfig(10, width=8, depth=2),
                         TrainConfig(epochs=2, batch_size=10, optimizer="adam", lr=1e-3, loss="mse"), "learned")
    x, t, _ = prepare_for_protocol(back, _Test(), proto)
    assert x.shape == (20, 28, 28, 1) and np.array_equal(x[10:], x[:10, :, ::-1, :])  # RCIG's flipped copies
    np.testing.assert_allclose(t[:10], y, atol=1e-6)             # MSE on the learned targets, not one-hot
    r = evaluate(back, _Test(), proto, jax.random.PRNGKey(2), k=2)
    accs = np.asarray(r.accs)
    assert accs.shape == (2,) and np.all((accs >= 0) & (accs <= 1))
    with pytest.raises(ValueError):
        I.import_rcig(str(tmp_path / "final_set.npz"), preprocess="zca_rcig")          # needs x_train
    np.savez(tmp_path / "bad.npz", images=pix, labels=y.argmax(1))
    with pytest.raises(ValueError):
        I.import_rcig(str(tmp_path / "bad.npz"))                 # RCIG's labels are (M, C) targets


def test_rcig_venv_pins_are_exact():
    from experiments.peers.venv import PINS

    deps = PINS["rcig"]["deps"]
    assert all(d.count("==") == 1 for d in deps), [d for d in deps if "==" not in d]
    pins = dict(d.split("==") for d in deps)
    assert pins["jax"] == pins["jaxlib"] == "0.4.33"
    assert pins["flax"] == "0.8.3" and pins["optax"] == "0.2.2"
    assert pins["tensorflow-cpu"].startswith("2.16.") and pins["tensorflow-datasets"] == "4.9.3"
    assert int(pins["protobuf"].split(".")[0]) < 5 and int(pins["numpy"].split(".")[0]) < 2
    for name in ("clu", "orbax-checkpoint", "einops", "ml-collections", "fire", "tensorflow-metadata"):
        assert name in pins
    assert not any(d.split("==")[0] in ("torch", "wandb") for d in deps)


def test_rcig_glue_joins_normalised_tfds_images_by_content():
    from experiments.peers.glue import launch as G

    rng = np.random.default_rng(6)
    raw = rng.integers(0, 256, size=(40, 28, 28, 1), dtype=np.uint8)
    idx = np.arange(5, 35)                                          # the labels file's subset
    lab = {"hash64": L.image_keys(raw[idx]), "indices": idx}
    perm = rng.permutation(40)                                      # tfds's order
    mean, std = [0.2861], [0.3530]
    x_norm = ((raw[perm] / 255.0) - mean[0]) / std[0]              # what RCIG's dataloader holds (float64)
    order = G.rcig_subset(x_norm, mean, std, lab)
    assert np.array_equal(raw[perm][order], raw[idx])
    with pytest.raises(ValueError):
        G.rcig_subset(x_norm[:-10], mean, std, lab)                 # a subset image missing from tfds's split
    env = G.rcig_thread_env(1)
    assert "--xla_cpu_multi_thread_eigen=false" in env["XLA_FLAGS"] and env["TF_NUM_INTRAOP_THREADS"] == "1"
    stub = G.stub_module("torch", "test")
    with pytest.raises(RuntimeError):
        stub.tensor


def test_cfg_override_and_smoke_row_run_on(tmp_path):
    import argparse
    import json

    from experiments.peers import run_peers as R

    a = argparse.Namespace(method="rcig", dataset="fashion_mnist", ipc=10, budget="quick", iterations=5,
                           chunk_iters=0, cfg=["tune_lr=false", "inner_lr=0.002"])
    cfg = R.cfg_for(a)
    assert cfg.tune_lr is False and cfg.inner_lr == pytest.approx(0.002) and cfg.iterations == 5
    p = B.to_original("rcig", cfg)["distill_dataset.py"]
    assert p["flag"]["skip_tune"] is True and p["patch"]["inner_lr"] == pytest.approx(0.002)
    with pytest.raises(SystemExit):
        R.cfg_for(argparse.Namespace(**{**vars(a), "cfg": ["no_such_field=1"]}))
    entry = {"original": {"mean": 0.5, "std": 0.01, "ms_per_iter": 10.0}, "jaxdistill": {"mean": 0.4, "std": 0.02,
             "ms_per_iter": 5.0}, "protocol": "rcig", "k": 2, "machine": "CPU X, 2 cores", "date": "2026-12-06"}
    out = str(tmp_path / "p.json")
    R.record(out, "rcig/symmetric:0.4/quick-smoke", 0, entry, "cmd")
    md = open(R.aggregate(out, str(tmp_path / "p.md"))).read()
    row = [ln for ln in md.splitlines() if ln.startswith("| rcig/")][0]
    assert "| 50.00 +- 1.00 | 40.00 +- 2.00 | - / - | 10 | 5 | - | CPU X, 2 cores, 2026-12-06 | `cmd` |" in row
    assert json.load(open(out))["rcig/symmetric:0.4/quick-smoke"]["seeds"] == 1
    # the starting sets' column: mean over the seeds that recorded one
    entry["original"]["initial"] = {"mean": 0.3}
    entry["jaxdistill"]["initial"] = {"mean": 0.25}
    R.record(out, "rcig/symmetric:0.4/quick-smoke", 1, entry, "cmd")
    md = open(R.aggregate(out, str(tmp_path / "p.md"))).read()
    row = [ln for ln in md.splitlines() if ln.startswith("| rcig/")][0]
    assert "| 30.00 / 25.00 |" in row


def test_original_commands_on_a_gpu_pass_the_device_and_refuse_rcig(tmp_path, monkeypatch):
    """--device cuda reaches every glue command (before the script's own arguments); cpu adds nothing; the RCIG
    glue has no GPU mode and says so."""
    from experiments.peers import run_peers as R

    cfg = B.get_config("datm", "fashion_mnist", 10, "quick")
    kw = dict(python="py", peer_dir=str(tmp_path), labels="l.npz", odir=str(tmp_path / "o"), seed=0, threads=1,
              noise="symmetric:0.4", k=1, budget="quick")
    monkeypatch.setattr(R, "datm_default_types", lambda peer: {})   # no DATM checkout here: values as given
    cpu = R.original_commands("datm", cfg, **kw)
    gpu = R.original_commands("datm", cfg, **kw, device="cuda")
    assert [s[0] for s in gpu] == [s[0] for s in cpu] == ["buffer", "distill"]
    for (_, a, _), (_, g, _) in zip(cpu, gpu):
        assert "--device" not in a
        i = g.index("--device")
        assert g[i + 1] == "cuda" and g.index("--") == i + 2 and g[:i] + g[i + 2:] == a
    with pytest.raises(SystemExit, match="RCIG glue has no GPU mode"):
        R.original_commands("rcig", B.get_config("rcig", "fashion_mnist", 10, "quick"), **kw, device="cuda")


_SHIM_CHECK = r"""
import argparse, json, os, sys
import numpy as np, torch, torchvision
from torchvision import datasets, transforms
sys.path.insert(0, sys.argv[1])
import shims
root = sys.argv[2]
real = datasets.FashionMNIST(root, train=True, transform=transforms.Compose([transforms.ToTensor(),
                                                                           transforms.Normalize([0.3], [0.4])]))
tv = shims.torchvision_stub()
mine = tv["torchvision.datasets"].FashionMNIST(root, train=True, transform=tv["torchvision.transforms"].Compose(
    [tv["torchvision.transforms"].ToTensor(), tv["torchvision.transforms"].Normalize([0.3], [0.4])]))
out = {"len": [len(real), len(mine)], "data": bool(torch.equal(real.data, mine.data)),
       "targets": bool(torch.equal(real.targets, mine.targets)),
       "items": max(float((real[i][0] - mine[i][0]).abs().max()) for i in range(len(real))),
       "labels": [real[i][1] == mine[i][1] for i in range(len(real))],
       "shape": list(mine[0][0].shape), "dtype": str(mine[0][0].dtype)}
u8 = real.data[:2]
conv = tv["torchvision.transforms"].ConvertImageDtype(torch.float)(u8)
out["convert"] = float((conv - transforms.ConvertImageDtype(torch.float)(u8)).abs().max())
crop = tv["torchvision.transforms"].RandomCrop(28, padding=4)(mine[0][0])
out["crop_shape"] = list(crop.shape)
w = shims.wandb_stub()
run = w.init(project="p", name="n", config=argparse.Namespace(ipc=10, lr=0.5))
out["wandb"] = [w.config._items, run.name, w.log({"a": 1}), w.finish()]
try:
    tv["torchvision.datasets"].CIFAR10
    out["strict"] = False
except AttributeError as e:
    out["strict"] = "stand-in" in str(e)
os.environ.pop("PEERS_STUB", None)
out["missing"] = shims.missing()
os.environ["PEERS_STUB"] = "wandb,torchvision"
out["forced"] = shims.missing()
print(json.dumps(out))
"""


def test_glue_stand_ins_match_torchvision_on_the_fashion_mnist_path(tmp_path):
    """The glue's torchvision stand-in (for a GPU machine without the package) reads the IDX files and
    transforms the images exactly as torchvision does; the wandb stand-in hands the config back as the scripts
    read it; anything else fails loudly."""
    import json
    import subprocess

    from experiments.peers.venv import venv_python

    py = venv_python("torch")
    if not os.path.exists(py):
        pytest.skip(f"no torch venv at {py} (python experiments/peers/venv.py torch)")
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rs = np.random.RandomState(0)
    for stem, n in (("train", 7), ("t10k", 3)):
        img = rs.randint(0, 256, (n, 28, 28)).astype(np.uint8)
        lab = rs.randint(0, 10, n).astype(np.uint8)
        (raw / f"{stem}-images-idx3-ubyte").write_bytes(
            bytes([0, 0, 8, 3]) + b"".join(int(v).to_bytes(4, "big") for v in img.shape) + img.tobytes())
        (raw / f"{stem}-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + lab.tobytes())
    script = tmp_path / "check.py"
    script.write_text(_SHIM_CHECK)
    r = subprocess.run([py, str(script), os.path.join(ROOT, "experiments", "peers", "glue"), str(tmp_path)],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["len"] == [7, 7] and out["data"] and out["targets"] and all(out["labels"])
    assert out["items"] == 0.0 and out["convert"] == 0.0
    assert out["shape"] == [1, 28, 28] and out["dtype"] == "torch.float32" and out["crop_shape"] == [1, 28, 28]
    assert out["wandb"] == [{"ipc": 10, "lr": 0.5}, "n", None, None]
    assert out["strict"] is True
    assert out["missing"] == [] and out["forced"] == ["wandb", "torchvision"]  # the real packages unless forced
