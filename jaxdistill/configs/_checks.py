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
