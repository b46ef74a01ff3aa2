"""Backs BUILD_NOTES.md "Issue 16: RCIG's own protocol" (its digits and Fashion-MNIST before / after tables).

Before/after figures for issue 16 items 1-3 (run with PYTHONPATH pointing at the tree under test).

usage: python benchmarks/studies/rcig_dance_eval_changes_before_after.py TAG DATASET [ablate]
       (writes /tmp/rcig_dance_eval_changes/TAG_DATASET.json)
Distils RCIG and DANCE (quick preset, IPC 10, symmetric:0.4, seed 0, fixed keys) and evaluates them under
their own protocol and the standard one (5 nets, key 7). `ablate` (the issue-16 tree only) turns each change
off in turn: RCIG's evaluation augmentation, flax's init in the evaluation net, the last partial batch, and
flax's init in RCIG's pool (a second distillation with PyTorch's init).
"""
import argparse
import os
import dataclasses, json, sys, time
# the repo root last, so that PYTHONPATH=<tree> picks the tree under test
sys.path.append(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
_ap = argparse.ArgumentParser(description="RCIG and DANCE before / after the evaluation changes (see the docstring)")
_ap.add_argument("tag", help="a label for the tree under test (before, after)")
_ap.add_argument("dataset", help="digits or fashion_mnist")
_ap.add_argument("ablate", nargs="?", choices=("ablate",), help="turn each change off in turn (the new tree only)")
_args = _ap.parse_args()
import jax, numpy as np
from jaxdistill.pipeline import load_noisy_data
from jaxdistill.methods import get_config, distill
from jaxdistill.evaluate import evaluate, get_protocol
import jaxdistill.evaluate as E

tag, dataset = _args.tag, _args.dataset
ablate = _args.ablate is not None
subset = 2000 if dataset != "digits" else None
data = load_noisy_data(dataset, "symmetric:0.4", 0, subset, 0.0, None)
out = {"tag": tag, "dataset": dataset}
def proto(name, ds, **kw):
    p = get_protocol(name, num_images=ds.num_images, num_classes=data.num_classes, image_size=ds.images.shape[1],
                     preset="quick", lr=ds.lr, **kw)
    return p
def ev(label, ds, p):
    t = time.perf_counter()
    r = evaluate(ds, data, p, jax.random.PRNGKey(7), k=5)
    out[label] = {"mean": r.mean, "std": r.std, "best": r.best_mean, "s": time.perf_counter() - t}
    print(label, out[label], flush=True)
import inspect
has_ch = "channels" in inspect.signature(get_protocol).parameters
extra = {"channels": data.x_train.shape[-1]} if has_ch else {}
for method, own in (("rcig", "rcig"), ("dance", "dance")):
    cfg = get_config(method, dataset, 10, "quick")
    t = time.perf_counter()
    ds = distill(method, cfg, data, jax.random.PRNGKey(1), progress=False)
    out[f"{method}_distill_s"] = time.perf_counter() - t
    p = proto(own, ds, **(extra if own == "rcig" else {}))
    ev(f"{method}/{own}", ds, p)
    ev(f"{method}/standard", ds, proto("standard", ds))
    if ablate:
        tc = p.train
        if method == "rcig":
            # item 1 off: no augmentation (eval net keeps flax init)
            ev("rcig/rcig[no aug]", ds, dataclasses.replace(p, train=tc.replace(augment="none")))
            # item 2 off in the eval net only: torch init
            ev("rcig/rcig[torch-init eval net]", ds, dataclasses.replace(p, net=p.net.replace(init="torch")))
        # item 3 off: drop the last partial batch
        ev(f"{method}/{own}[drop_last]", ds, dataclasses.replace(p, train=tc.replace(drop_last=True)))
        if method == "rcig":
            # item 2 off in distillation: torch-init pool (eval under the new protocol)
            import jaxdistill.configs.rcig as CR
            orig = CR.RCIGConfig.net_config
            CR.RCIGConfig.net_config = lambda self, c, distill=True: orig(self, c, distill).replace(init="torch")
            ds2 = distill(method, cfg, data, jax.random.PRNGKey(1), progress=False)
            CR.RCIGConfig.net_config = orig
            ev("rcig(torch-init pool)/rcig", ds2, p)
            ev("rcig(torch-init pool)/standard", ds2, proto("standard", ds2))
os.makedirs("/tmp/rcig_dance_eval_changes", exist_ok=True)
json.dump(out, open(f"/tmp/rcig_dance_eval_changes/{tag}_{dataset}.json", "w"), indent=1)
