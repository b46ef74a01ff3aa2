"""The evaluator and the baseline on 4 (forced host) devices give the results of one device."""
import json
import os
import subprocess
import sys

import numpy as np

SCRIPT = r"""
import json, sys, dataclasses
import jax, numpy as np
from jaxdistill.data import load_dataset, make_noisy_data
from jaxdistill.evaluate import evaluate, get_protocol
from jaxdistill.methods.base import DistilledSet
d = make_noisy_data(load_dataset("digits"), "symmetric:0.4", subset=300)
idx = np.concatenate([np.where(d.y_noisy == c)[0][:3] for c in range(10)])
ds = DistilledSet(images=d.x_train[idx], labels=d.y_noisy[idx], method="toy")
p = get_protocol("standard", num_images=30, num_classes=10, image_size=8, preset="quick", width=8)
p = dataclasses.replace(p, train=p.train.replace(steps=15))
r = evaluate(ds, d, p, jax.random.PRNGKey(3), k=4)
print(json.dumps({"devices": jax.device_count(), "accs": r.accs}))
"""


def _run(n_devices):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={n_devices}")
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_evaluator_sharded_over_4_devices_matches_one_device():
    one, four = _run(1), _run(4)
    assert one["devices"] == 1 and four["devices"] == 4
    np.testing.assert_allclose(four["accs"], one["accs"], atol=1e-6)
