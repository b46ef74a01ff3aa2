"""Configs from files: ``--config FILE`` (JSON, or a Python file whose ``get_config()`` returns a config)
and ``--set KEY=VALUE`` on top, applied to the frozen config dataclasses.

Order: the command's flags and presets build the config, then the file's keys replace fields, then each
``--set``. Keys are field names; nested dataclass fields take a nested mapping in a file or a dotted key
in ``--set`` (``train.epochs=3``). ``--set`` values are parsed as JSON (``3``, ``0.1``, ``true``,
``[1, 2]``, ``null``), else kept as the string. Every command writes the resolved config as
``config.json`` in its output directory; passing that file back as ``--config`` repeats the run.
"""
from __future__ import annotations

import dataclasses
import json
import os
import runpy
from typing import Any, Mapping, Optional, Sequence

from jaxdistill.errors import ConfigError

RESOLVED_FILE = "config.json"


def load_config_file(path: str) -> dict:
    """The mapping in a .json file, or what ``get_config()`` of a .py file returns (a dict, an
    ml_collections ConfigDict, or a dataclass), as a plain dict."""
    if not os.path.isfile(path):
        raise ConfigError(f"--config {path!r}: no such file; allowed a .json or .py file")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".json":
        try:
            with open(path, encoding="utf-8") as f:
                out = json.load(f)
        except ValueError as e:
            raise ConfigError(f"--config {path!r} is not valid JSON: {e}") from None
    elif ext == ".py":
        ns = runpy.run_path(path)
        if not callable(ns.get("get_config")):
            raise ConfigError(f"--config {path!r} defines no get_config(); a Python config file must define "
                              f"get_config() returning a dict, an ml_collections ConfigDict or a dataclass")
        out = _to_dict(ns["get_config"]())
    else:
        raise ConfigError(f"--config {path!r}: extension {ext!r} is not one of ['.json', '.py']")
    if not isinstance(out, dict):
        raise ConfigError(f"--config {path!r} gives a {type(out).__name__}; expected a mapping of config fields")
    return out


def _to_dict(obj: Any) -> Any:
    if hasattr(obj, "to_dict") and callable(obj.to_dict):  # ml_collections.ConfigDict
        return obj.to_dict()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    return dict(obj) if isinstance(obj, Mapping) else obj


def parse_sets(pairs: Optional[Sequence[str]]) -> dict:
    """['a=1', 'train.epochs=3'] -> {'a': 1, 'train': {'epochs': 3}}."""
    out: dict = {}
    for p in pairs or ():
        if "=" not in p:
            raise ConfigError(f"--set {p!r} must look like key=value (e.g. iterations=100 or train.epochs=3)")
        key, raw = p.split("=", 1)
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        node = out
        *parents, leaf = key.strip().split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = value
    return out


def apply_mapping(cfg: Any, mapping: Mapping, what: str = "config") -> Any:
    """`cfg` (a frozen dataclass) with the fields in `mapping` replaced; nested dataclasses recursively.

    Lists become tuples where the field holds a tuple (JSON has no tuples). Unknown keys raise
    ConfigError naming the allowed ones.
    """
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    kw = {}
    for k, v in mapping.items():
        if k not in fields:
            raise ConfigError(f"{what}: key {k!r} does not exist; known keys: {sorted(fields)}")
        cur = getattr(cfg, k)
        if dataclasses.is_dataclass(cur) and isinstance(v, Mapping):
            v = apply_mapping(cur, v, f"{what}.{k}")
        elif isinstance(v, list) and (isinstance(cur, tuple) or cur is None):
            v = tuple(tuple(x) if isinstance(x, list) else x for x in v)
        kw[k] = v
    try:
        return dataclasses.replace(cfg, **kw)
    except TypeError as e:
        raise ConfigError(f"{what}: cannot set {sorted(kw)}: {e}") from None


def resolve(cfg: Any, config_file: Optional[str], sets: Optional[Sequence[str]], what: str = "config") -> Any:
    """The config after the file (if any) and then the --set pairs."""
    if config_file:
        cfg = apply_mapping(cfg, load_config_file(config_file), f"{what} (from {config_file})")
    if sets:
        cfg = apply_mapping(cfg, parse_sets(sets), f"{what} (--set)")
    return cfg


def save_resolved(out_dir: str, cfg: Any) -> str:
    """Write `cfg` as out_dir/config.json (what --config reads back); returns the path."""
    from jaxdistill.checkpoint import atomic_write_json

    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, RESOLVED_FILE)
    atomic_write_json(path, json.loads(json.dumps(dataclasses.asdict(cfg), default=str)))
    return path
