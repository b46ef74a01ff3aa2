"""jaxdistill: dataset distillation (DATM, DANCE, RCIG) as a label denoiser, in JAX.

Public API (imported lazily so `import jaxdistill` stays light):
  load_dataset, make_noisy_data, apply_noise, parse_noise_spec, distill, get_config, list_methods,
  evaluate, run_baseline, run_denoise, DenoiseConfig, DistilledSet, NetConfig, make_net, TrainConfig, train_models.
"""
from jaxdistill.errors import (ConfigError, DataError, JaxDistillError, NoiseError, NumericalError,  # noqa: F401
                               StoreError)

__version__ = "0.1.0"

_LAZY = {
    "load_dataset": "jaxdistill.data", "make_noisy_data": "jaxdistill.data", "list_datasets": "jaxdistill.data",
    "apply_noise": "jaxdistill.noise", "parse_noise_spec": "jaxdistill.noise",
    "distill": "jaxdistill.methods", "get_config": "jaxdistill.methods",
    "list_methods": "jaxdistill.methods", "DistilledSet": "jaxdistill.methods.base",
    "evaluate": "jaxdistill.evaluate", "run_baseline": "jaxdistill.baseline",
    "run_denoise": "jaxdistill.pipeline", "DenoiseConfig": "jaxdistill.pipeline",
    "NetConfig": "jaxdistill.nn", "make_net": "jaxdistill.nn",
    "TrainConfig": "jaxdistill.train", "train_models": "jaxdistill.train",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'jaxdistill' has no attribute {name!r}")


__all__ = sorted(_LAZY) + ["ConfigError", "DataError", "JaxDistillError", "NoiseError", "NumericalError", "StoreError"]
