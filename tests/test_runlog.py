"""metrics.jsonl: every long stage appends its curve as it goes; report curves; optional TensorBoard."""
import json
import os

import jax
import numpy as np
import pytest

from jaxdistill.runlog import MetricsLog, plot_curves, read_metrics


def test_metrics_log_lines_append_and_read_back(tmp_path):
    log = MetricsLog(str(tmp_path), "s1", tensorboard=False)
    log.log(1, loss=np.float32(2.5), lr=0.1, acc=None)
    log.log(2, loss=float("nan"))
    MetricsLog(str(tmp_path), "s2", tensorboard=False).log(1, loss=1.0)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3
    first = json.loads(lines[0])
    assert first["stage"] == "s1" and first["step"] == 1 and first["loss"] == 2.5 and first["lr"] == 0.1
    assert "acc" not in first and first["wall_s"] >= 0
    assert json.loads(lines[1])["loss"] == "nan"
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"stage": "s1", "st')  # a line torn by a crash
    assert [r["step"] for r in read_metrics(str(tmp_path), "s1")] == [1, 2]
    assert MetricsLog(None, "x").path is None  # no run dir: records nothing
    assert plot_curves(str(tmp_path / "c.png"), {"a": read_metrics(str(tmp_path), "s1")}) == str(tmp_path / "c.png")


def test_tensorboard_writer_when_installed(tmp_path):
    pytest.importorskip("tensorboardX")
    log = MetricsLog(str(tmp_path), "stage")
    log.log(3, loss=1.5)
    log.close()
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tb" / "stage"))


def test_tensorboard_scalars_go_to_the_installed_writer(tmp_path, monkeypatch):
    """Without tensorboardX here, a stand-in module checks what MetricsLog sends to a writer."""
    import sys
    import types

    calls = []

    class Writer:
        def __init__(self, logdir):
            calls.append(("dir", logdir))

        def add_scalar(self, name, value, step):
            calls.append((name, value, step))

        def flush(self):
            pass

        def close(self):
            calls.append("closed")

    monkeypatch.setitem(sys.modules, "tensorboardX", types.SimpleNamespace(SummaryWriter=Writer))
    log = MetricsLog(str(tmp_path), "distill/rcig")
    log.log(4, loss=0.5, lr=0.1)
    log.close()
    assert calls[0] == ("dir", os.path.join(str(tmp_path), "tb", "distill_rcig"))
    assert ("distill/rcig/loss", 0.5, 4) in calls and ("distill/rcig/lr", 0.1, 4) in calls
    assert calls[-1] == "closed"


def test_train_models_logs_each_epoch_with_lr_schedule(tmp_path):
    from jaxdistill.nn import NetConfig, make_net
    from jaxdistill.train import TrainConfig, train_models

    net = make_net(NetConfig(num_classes=3, width=4, depth=1))
    rs = np.random.RandomState(0)
    x, y = rs.rand(24, 8, 8, 1).astype(np.float32), rs.randint(0, 3, 24)
    cfg = TrainConfig(epochs=4, batch_size=8, lr=0.1, schedule="multistep", milestones=(0.5,), gamma=0.1)
    res = train_models(net, x, y, cfg, jax.random.PRNGKey(0), 2, eval_data=(x, y), eval_every=2,
                       metrics_log=MetricsLog(str(tmp_path), "t", tensorboard=False))
    rows = read_metrics(str(tmp_path), "t")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    np.testing.assert_allclose([r["loss"] for r in rows], np.mean(res.history["loss"], axis=1), rtol=1e-6)
    # 3 steps per epoch, milestone at step 6: lr 0.1 through epoch 1, then 0.01 (the value at each epoch's end)
    np.testing.assert_allclose([r["lr"] for r in rows], [0.1, 0.01, 0.01, 0.01], rtol=1e-6)
    assert [("test_acc" in r) for r in rows] == [False, True, False, True]
    np.testing.assert_allclose(rows[-1]["test_acc"], np.mean(res.history["test_acc"][-1][1]), rtol=1e-6)
