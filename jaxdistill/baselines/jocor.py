"""JoCoR (Wei et al., CVPR 2020): two nets trained jointly on one small-loss selection.

Per sample: l = (1 - lam) (CE(p1, y) + CE(p2, y)) + lam (KL(p1 || p2) + KL(p2 || p1)) (the symmetric
KL co-regularisation; gradients flow through both distributions, as in the original code). The
small-loss fraction 1 - forget_rate(e) of the batch by the joint loss is kept and its mean is the loss
both nets descend. lam = 0.9 (0.65 for asymmetric noise, the paper's choice). Same schedule, net,
budget and machinery as Co-teaching (jaxdistill.baselines.coteaching.train_pair).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdistill.baselines.coteaching import (CoTeachingConfig, ce, get_coteaching_config, small_loss_mask,
                                             train_pair)
from jaxdistill.errors import ConfigError

JocorConfig = CoTeachingConfig

LAM_SYMMETRIC = 0.9
LAM_ASYMMETRIC = 0.65


def jocor_lam(noise_kind: str) -> float:
    """JoCoR's co-regularisation weight: 0.65 for structured noise (asymmetric / pairflip), else 0.9."""
    return LAM_ASYMMETRIC if noise_kind in ("asymmetric", "pairflip") else LAM_SYMMETRIC


def get_jocor_config(dataset: str, preset: str = "paper", noise_kind: str = "symmetric", **overrides) -> JocorConfig:
    """The baseline's budget; lam 0.9, or 0.65 for structured noise (asymmetric / pairflip)."""
    return get_coteaching_config(dataset, preset, lam=jocor_lam(noise_kind)).replace(**overrides)


def kl(logits_p: jax.Array, logits_q: jax.Array) -> jax.Array:
    """KL(softmax(p) || softmax(q)) per example, (B, C) -> (B,)."""
    lp, lq = jax.nn.log_softmax(logits_p), jax.nn.log_softmax(logits_q)
    return (jnp.exp(lp) * (lp - lq)).sum(-1)


def jocor_sample_loss(logits1, logits2, y, lam):
    """(B,) joint per-sample loss."""
    return (1 - lam) * (ce(logits1, y) + ce(logits2, y)) + lam * (kl(logits1, logits2) + kl(logits2, logits1))


def make_jocor_loss(lam: float):
    def loss_fn(logits1, logits2, y, keep, bias=0.0):
        l = jocor_sample_loss(logits1, logits2, y, lam)
        m = jax.lax.stop_gradient(small_loss_mask(l + bias, keep))
        return (m * l).sum() / jnp.maximum(keep, 1).astype(l.dtype), {"mask": m}

    return loss_fn


def train_jocor(data, cfg: JocorConfig, key: jax.Array, progress: bool = False) -> dict:
    """JoCoR on data.x_train / data.y_noisy; same result dict as train_coteaching (selection = the joint one)."""
    if cfg.train.augment != "none" or cfg.train.cutmix_p > 0 or cfg.train.sam_rho > 0:
        raise ConfigError(f"JoCoR uses plain steps: augment={cfg.train.augment!r}, cutmix_p, sam_rho must "
                          f"be 'none'/0 (allowed: the baseline's plain SGD/Adam config)")
    return train_pair(data, cfg, key, make_jocor_loss(cfg.lam), "jocor", progress)
