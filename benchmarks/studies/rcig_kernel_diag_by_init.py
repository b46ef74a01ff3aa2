"""Backs BUILD_NOTES.md "Issue 16: RCIG's own protocol" (its feature-kernel diagonal table).

Mean diagonal of RCIG's feature kernel phi0 phi0^T at init (the K_ss of its ridge regression), PyTorch's vs
flax's init, 200 real training images in RCIG's working space, 3 inits.
usage: python benchmarks/studies/rcig_kernel_diag_by_init.py"""
import argparse, os, sys
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repo root
argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
import numpy as np, jax
from jaxdistill.data import load_dataset
from jaxdistill.configs.rcig import get_config
from jaxdistill.methods.rcig import _preprocessor
from jaxdistill.nn import make_net
for ds_name, preset in (("digits", "quick"), ("digits", "paper"), ("fashion_mnist", "quick"), ("fashion_mnist", "paper")):
    ds = load_dataset(ds_name)
    cfg = get_config(ds_name, 10, preset)
    x = np.asarray(ds.x_train[:200], np.float32)
    pre = _preprocessor(cfg, np.asarray(ds.x_train[:5000], np.float32))
    x = np.asarray(pre.apply(x))
    row = [ds_name, preset, cfg.width]
    for init in ("torch", "flax"):
        net = make_net(cfg.net_config(10, distill=True).replace(init=init))
        d = []
        for s in range(3):
            p = net.init(jax.random.PRNGKey(s), x.shape[1:])
            _, f = net.apply_with_features(p, x)
            d.append(float((np.asarray(f) ** 2).sum(1).mean()))
        row.append(f"{init} {np.mean(d):.3g}")
    print(*row, flush=True)
