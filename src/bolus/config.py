"""Configuration: the JSON schemas are the one source of every default.

The library never repeats a default: it asks :func:`schema_defaults` or builds a
:class:`PerfusionConstants` from a (possibly partial) config mapping.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml


def _schema_dir() -> Path:
    """Folder of the schemas: inside an installed wheel, else the source checkout's."""
    packaged = resources.files("bolus") / "schemas"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "schemas"


@cache
def load_schema(name: str) -> dict[str, Any]:
    """Load ``schemas/<name>.schema.yaml`` (``config`` or ``participants``)."""
    path = _schema_dir() / f"{name}.schema.yaml"
    with open(path) as fh:
        schema = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    if name == "config":  # the methods' one home is their registry
        from bolus.perfusion.methods import METHODS

        schema["properties"]["svd"]["properties"]["methods"]["items"]["enum"] = list(METHODS)
    return schema


def _defaults_of(schema: dict[str, Any]) -> Any:
    if schema.get("type") == "object":
        out = copy.deepcopy(schema.get("default", {}))
        for key, sub in schema.get("properties", {}).items():
            value = _defaults_of(sub)
            if value is not None and key not in out:
                out[key] = value
        return out
    return copy.deepcopy(schema.get("default"))


def schema_defaults() -> dict[str, Any]:
    """Every default of the config schema, as a nested dict."""
    return _defaults_of(load_schema("config"))


def with_defaults(config: dict[str, Any] | None) -> dict[str, Any]:
    """A copy of ``config`` with every missing key filled from the schema defaults."""

    def merge(base: Any, over: Any) -> Any:
        if isinstance(base, dict) and isinstance(over, dict):
            merged = dict(base)
            for key, value in over.items():
                if value is None and not isinstance(base.get(key), dict):
                    merged[key] = None  # an explicit null (e.g. `frames: null`: all frames)
                else:
                    merged[key] = merge(base.get(key), value)
            return merged
        return copy.deepcopy(over) if over is not None else base

    return merge(schema_defaults(), config or {})


def section(name: str, value: dict[str, Any] | None = None) -> dict[str, Any]:
    """One config section (``svd``, ``aif``, ``lesion``, …) with its missing keys filled from
    the schema. Stage functions take the sections they read, so a rule's params can carry
    exactly those; in the workflow they arrive filled already (the Snakefile validates the
    config once), from tests and the command line they may be partial or None."""
    defaults = schema_defaults()
    if name not in defaults:
        raise KeyError(f"the config schema has no section {name!r}")
    return defaults[name] if value is None else with_defaults({name: value})[name]


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Validate against the schema and return the config with defaults filled in.

    Raises ``ValueError`` naming the offending key.
    """
    import jsonschema

    filled = with_defaults(config)
    validator = jsonschema.Draft202012Validator(load_schema("config"))
    errors = sorted(validator.iter_errors(filled), key=lambda e: list(e.path))
    if errors:
        lines = [f"  {'.'.join(map(str, e.path)) or '<top>'}: {e.message}" for e in errors]
        raise ValueError("invalid bolus config:\n" + "\n".join(lines))
    return filled


@dataclass(frozen=True)
class PerfusionConstants:
    """Physiological constants of DSC quantification.

    density_g_ml: brain tissue density (g/ml); hct_large / hct_small: hematocrit of large
    vessels and capillaries. ``kh`` = (1 − hct_large)/(1 − hct_small) corrects for the
    plasma-only distribution of the tracer (Rempp 1994).
    """

    density_g_ml: float
    hct_large: float
    hct_small: float

    @classmethod
    def from_config(cls, config: dict[str, Any] | None = None) -> PerfusionConstants:
        """From a full config, or its ``constants`` block, or nothing (schema defaults)."""
        config = config or {}
        block = config.get("constants", config) if isinstance(config, dict) else {}
        merged = {**schema_defaults()["constants"], **(block or {})}
        return cls(
            density_g_ml=float(merged["density"]),
            hct_large=float(merged["hct_large"]),
            hct_small=float(merged["hct_small"]),
        )

    @property
    def kh(self) -> float:
        return (1.0 - self.hct_large) / (1.0 - self.hct_small)

    @property
    def cbv_scale(self) -> float:
        """Factor from the area ratio ∫C_t/∫C_a to CBV in ml/100 g."""
        return 100.0 * self.kh / self.density_g_ml

    @property
    def cbf_scale(self) -> float:
        """Factor from max(F·R) in 1/s to CBF in ml/100 g/min."""
        return 60.0 * self.cbv_scale
