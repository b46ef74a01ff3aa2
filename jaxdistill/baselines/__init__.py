"""Established noisy-label training methods, run side by side with distillation: Co-teaching, JoCoR, GCE, ELR,
DivideMix."""
from jaxdistill.baselines.coteaching import (CoTeachingConfig, forget_rate_schedule, get_coteaching_config,
                                             train_coteaching)
from jaxdistill.baselines.dividemix import (DivideMixConfig, get_dividemix_config, train_dividemix,
                                            train_dividemix_select)
from jaxdistill.baselines.jocor import JocorConfig, get_jocor_config, train_jocor
from jaxdistill.baselines.robust import RobustConfig, get_robust_config, train_robust

__all__ = ["CoTeachingConfig", "DivideMixConfig", "get_dividemix_config", "train_dividemix", "train_dividemix_select",
           "JocorConfig", "RobustConfig", "forget_rate_schedule", "get_coteaching_config",
           "get_jocor_config", "get_robust_config", "train_coteaching", "train_jocor", "train_robust"]
