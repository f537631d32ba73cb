"""How a method's settings are read from a checkpoint's config.json, once for every method: a JSON object of the
current ``format_version`` whose keys are the settings dataclass's fields."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from ..errors import ConfigError


def from_mapping(cls, data: Any, key: str, version: int):
    """``cls(**data)`` for the settings stored under ``key``; one line for anything else."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"the {key} settings must be a JSON object, got {type(data).__name__}")
    got = data.get("format_version", version)
    if got != version:
        raise ConfigError(f"{key} settings format_version {got!r} is not supported (this pumer-export reads "
                          f"{version}); upgrade pumer-export")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields - {"format_version"})
    if unknown:
        raise ConfigError(f"unknown {key} setting(s): {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
    return cls(**{k: _special_float(v) for k, v in data.items() if k in fields})


#: how transformers writes the floats JSON has no literal for into config.json (``PreTrainedConfig.to_json_string``)
_FLOAT_TAGS = {"Infinity": float("inf"), "-Infinity": float("-inf"), "NaN": float("nan")}


def _special_float(value: Any) -> Any:
    """``{"__float__": "Infinity"}`` (transformers' encoding of inf, -inf and nan in config.json) as the float."""
    if isinstance(value, Mapping) and set(value) == {"__float__"} and value["__float__"] in _FLOAT_TAGS:
        return _FLOAT_TAGS[value["__float__"]]
    return value


def to_mapping(settings, version: int) -> dict[str, Any]:
    """The settings as stored: their fields (tuples as lists) and ``format_version``."""
    data = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(settings).items()}
    return {**data, "format_version": version}
