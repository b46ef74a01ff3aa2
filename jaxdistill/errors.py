"""The project's own error types: every bad input raises one of these with the bad value named."""


class JaxDistillError(Exception):
    """Base class of every error jaxdistill raises on purpose."""


class ConfigError(JaxDistillError, ValueError):
    """A bad configuration value, name or combination."""


class NoiseError(JaxDistillError, ValueError):
    """A bad noise specification, rate, transition matrix or label array."""


class DataError(JaxDistillError, ValueError):
    """Missing, malformed or inconsistent data (files, shapes, NaNs, labels)."""


class StoreError(JaxDistillError, ValueError):
    """An expert/pool store or checkpoint that does not match the run, or is damaged."""


class NumericalError(JaxDistillError, RuntimeError):
    """Too many consecutive non-finite losses or gradients."""


class Interrupted(Exception):
    """A stop request (SIGINT/SIGTERM) was honoured: the state is checkpointed and re-running resumes.

    Not an input error: the command line answers it with exit status 130, not 2."""
