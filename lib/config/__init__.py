"""Typed configuration: dataclasses loaded from YAML presets with overrides, validated with clear errors.

A preset lives in ``lib/presets/<name>.yml``; it may name a ``base`` preset it extends. Overrides are either a
nested dict or dotted strings (``"model.quantizer.n_q=4"``), so a notebook's parameters cell and the command line
share one mechanism. Unknown keys and inconsistent values raise ``ConfigError`` naming the key.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path
from typing import Any

import yaml

from lib.config.checks import validate
from lib.config.schema import (Config, ConfigError, DataConfig, EnergyConfig, LossConfig, ModelConfig,  # noqa: F401
                               QuantizerConfig, SpectralConfig, TrainConfig)

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"


# ----------------------------------------------------------------------------- loading


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yml"))


def _read_preset(name_or_path: str | Path, seen: tuple = ()) -> dict:
    path = Path(name_or_path)
    if path.suffix not in (".yml", ".yaml"):
        path = PRESET_DIR / f"{name_or_path}.yml"
    if not path.is_file():
        raise ConfigError(f"preset {str(name_or_path)!r} not found (known presets: {', '.join(list_presets())})")
    with open(path) as f:
        raw = yaml.safe_load(f) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at top level, got {type(raw).__name__}")
    base = raw.pop("base", None)
    if base is None:
        return raw
    if base in seen:
        raise ConfigError(f"{path}: circular 'base' chain {seen + (base,)}")
    return _merge(_read_preset(base, seen + (base,)), raw)


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_overrides(overrides: dict | list[str] | None) -> dict:
    """Turn ``["model.dim=64", ...]`` (values parsed as YAML) or a nested/dotted dict into a nested dict."""
    if not overrides:
        return {}
    items = overrides.items() if isinstance(overrides, dict) else []
    if not isinstance(overrides, dict):
        pairs = []
        for s in overrides:
            if "=" not in s:
                raise ConfigError(f"override {s!r} must look like key.path=value")
            k, v = s.split("=", 1)
            pairs.append((k.strip(), yaml.safe_load(v)))
        items = pairs
    nested: dict = {}
    for key, value in items:
        node = nested
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]] = _merge(node[parts[-1]], value)
        else:
            node[parts[-1]] = value
    return nested


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert ``value`` to the annotated type ``tp``; raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for option in inner[:-1]:  # the first type that accepts the value; the last one's error otherwise
            try:
                return _coerce(value, option, key)
            except ConfigError:
                pass
        return _coerce(value, inner[-1], key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _build(tp, value, key)
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def _build(cls: type, raw: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        where = prefix or "config"
        raise ConfigError(f"unknown key(s) {', '.join(prefix + '.' + u if prefix else u for u in unknown)} "
                          f"(valid keys in {where}: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in raw.items()}
    return cls(**kwargs)


def config_from_dict(raw: dict) -> Config:
    cfg = _build(Config, raw)
    validate(cfg)
    return cfg


def load_config(preset: str | Path = "cpu", overrides: dict | list[str] | None = None) -> Config:
    """Load a preset (name in lib/presets or a YAML path) and apply overrides; validated."""
    raw = _merge(_read_preset(preset), parse_overrides(overrides))
    raw.setdefault("name", Path(str(preset)).stem)
    return config_from_dict(raw)
