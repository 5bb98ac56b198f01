"""A job spec from a YAML or JSON file, with `--set dotted.path=value` overrides."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

# YAML 1.1 reads `1e-4` (no dot) as a string; on the command line it means a number.
_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


class SpecError(ValueError):
    """The spec file or an override cannot be used."""


def load_spec(path: str, overrides: list[str], name: str | None = None) -> dict[str, Any]:
    """The file's mapping (`-` reads stdin), then each override, then `name`."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        # JSON is YAML too: one parser reads both.
        spec = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path} is not valid YAML or JSON: {exc}") from None
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise SpecError(f"{path} must hold a mapping of job fields, not {type(spec).__name__}")
    for item in overrides:
        apply_override(spec, item)
    if name is not None:
        spec["name"] = name
    return spec


def apply_override(spec: dict[str, Any], item: str) -> None:
    """Set `a.b.c=value` in `spec`, creating the mappings on the way."""
    dotted, sep, raw = item.partition("=")
    keys = dotted.strip().split(".")
    if not sep or not all(keys):
        raise SpecError(f"--set {item!r}: expected key=value, e.g. hyperparameters.max_steps=60")
    target = spec
    for depth, key in enumerate(keys[:-1]):
        child = target.setdefault(key, {})
        if not isinstance(child, dict):
            where = ".".join(keys[: depth + 1])
            raise SpecError(f"--set {item!r}: {where} is a {type(child).__name__}, not a mapping")
        target = child
    target[keys[-1]] = parse_scalar(raw)


def parse_scalar(raw: str) -> Any:
    """A value as YAML reads it (`60`, `true`, `null`, `[a, b]`, `"quoted"`)."""
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    if isinstance(value, str) and _FLOAT.match(raw.strip()):
        return float(raw)
    return value
