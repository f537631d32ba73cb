"""FastV settings, stored in a checkpoint's config.json under ``"fastv"``.

* ``drop_layer`` (k): the first decoder layer that runs on the kept tokens only (at least 1: the ranking reads layer
  k-1's attention; FastV's default 2);
* ``keep_tokens`` (R): how many visual tokens stay (a fixed count, at most N).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from ...errors import ConfigError
from ..settings import from_mapping, to_mapping

CONFIG_KEY = "fastv"
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class FastVConfig:
    keep_tokens: int
    drop_layer: int = 2

    def __post_init__(self) -> None:
        for name, minimum in (("keep_tokens", 0), ("drop_layer", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(f"fastv {name} must be an integer of at least {minimum}, got {value!r}")

    def check_against(self, num_layers: int, image_tokens: int) -> None:
        if self.drop_layer > num_layers:
            raise ConfigError(f"fastv drop layer {self.drop_layer} is past the language model's {num_layers} "
                              f"layers: choose 1..{num_layers} (--drop-layer)")
        if self.keep_tokens > image_tokens:
            raise ConfigError(f"fastv keeps {self.keep_tokens} visual tokens but an image has {image_tokens}: "
                              f"choose 0..{image_tokens} (--keep-tokens)")

    def to_dict(self) -> dict[str, Any]:
        return to_mapping(self, FORMAT_VERSION)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FastVConfig":
        return from_mapping(cls, data, CONFIG_KEY, FORMAT_VERSION)
