"""Field checks shared by the distiller configs: each raises ConfigError naming the owner, the field, the
value and what is allowed."""
from __future__ import annotations

from typing import Any, Iterable

from jaxdistill.errors import ConfigError


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_ints(owner: str, cfg: Any, names: Iterable[str], lo: int = 1) -> None:
    """Every named field is an int >= lo."""
    for name in names:
        v = getattr(cfg, name)
        if not _is_int(v) or v < lo:
            raise ConfigError(f"{owner} {name}={v!r} must be an integer >= {lo}")


def check_positive(owner: str, cfg: Any, names: Iterable[str]) -> None:
    for name in names:
        v = getattr(cfg, name)
        if not v > 0:
            raise ConfigError(f"{owner} {name}={v!r} must be > 0")


def check_fraction(owner: str, cfg: Any, names: Iterable[str]) -> None:
    """Every named field lies in [0, 1) (momenta, EMA decays)."""
    for name in names:
        v = getattr(cfg, name)
        if not 0 <= v < 1:
            raise ConfigError(f"{owner} {name}={v!r} must be in [0, 1)")


def check_choice(owner: str, name: str, value: Any, allowed: Iterable) -> None:
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(f"{owner} {name}={value!r} is not one of {allowed}")


def check_devices(owner: str, value: Any) -> None:
    if not _is_int(value) or value < 0:
        raise ConfigError(f"{owner} devices={value!r} must be an int >= 0 (0 = all visible devices when there are "
                          f"several, 1 = one device, n = the first n devices)".lstrip())


def check_chunk(owner: str, value: Any, checkpoint_every: int) -> None:
    """chunk_iters: 0 (automatic) or a divisor of checkpoint_every, so checkpoints fall on chunk ends."""
    if not _is_int(value) or value < 0 or (value and _is_int(checkpoint_every) and checkpoint_every % value):
        divs = [d for d in range(1, checkpoint_every + 1) if checkpoint_every % d == 0] if _is_int(checkpoint_every) \
            and 0 < checkpoint_every <= 10_000 else "its divisors"
        raise ConfigError(f"{owner} chunk_iters={value!r} must be 0 (automatic) or divide checkpoint_every="
                          f"{checkpoint_every}; allowed: 0 or {divs}")
