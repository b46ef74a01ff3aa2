"""Established noisy-label training methods, run side by side with distillation: Co-teaching, JoCoR."""
from jaxdistill.baselines.coteaching import (CoTeachingConfig, forget_rate_schedule, get_coteaching_config,
                                             train_coteaching)
from jaxdistill.baselines.jocor import JocorConfig, get_jocor_config, train_jocor

__all__ = ["CoTeachingConfig", "JocorConfig", "forget_rate_schedule", "get_coteaching_config", "get_jocor_config",
           "train_coteaching", "train_jocor"]
