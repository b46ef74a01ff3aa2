"""Backs BUILD_NOTES.md "Issue 16: RCIG's own protocol" (its Fashion-MNIST table, changes turned off).

Issue 16: RCIG's two evaluation changes turned off in turn on one distilled Fashion-MNIST set (quick preset,
symmetric 0.4, IPC 10, distillation key 1, evaluation key 7, 5 nets).
usage: python benchmarks/studies/rcig_eval_changes_ablation.py
"""
import argparse, os, sys
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repo root
argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
import dataclasses, json, time, jax
from jaxdistill.pipeline import load_noisy_data
from jaxdistill.methods import get_config, distill
from jaxdistill.evaluate import evaluate, get_protocol
data = load_noisy_data("fashion_mnist", "symmetric:0.4", 0, 2000, 0.0, None)
ds = distill("rcig", get_config("rcig", "fashion_mnist", 10, "quick"), data, jax.random.PRNGKey(1), progress=False)
p = get_protocol("rcig", num_images=ds.num_images, num_classes=10, image_size=28, preset="quick", channels=1)
out = {}
for label, q in (("no aug", dataclasses.replace(p, train=p.train.replace(augment="none"))),
                 ("torch-init eval net", dataclasses.replace(p, net=p.net.replace(init="torch"))),
                 ("no aug + torch-init eval net", dataclasses.replace(p, net=p.net.replace(init="torch"), train=p.train.replace(augment="none")))):
    r = evaluate(ds, data, q, jax.random.PRNGKey(7), k=5)
    out[label] = (r.mean, r.std, r.best_mean); print(label, out[label], flush=True)
print(json.dumps(out))
