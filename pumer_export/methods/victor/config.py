"""Victor settings, stored in a checkpoint's config.json under ``"victor"``.

The paper (Wen et al., arXiv 2410.14072) fixes the method: M learnable registers follow the N projected visual tokens,
the first k decoder layers run on the whole sequence, the visual tokens leave before layer k. What it leaves open is
this project's choice (marked so in :mod:`pumer_export.methods.victor`): positions after the drop keep their original
values ("keep"), the registers sit right after the image, the drop removes the image span only (the prefix stays).

* ``registers`` (M): the number of learnable registers, at least 1 (M = 0 is allowed only with ``drop_layer`` = the
  layer count, which is stock LLaVA: the equivalence the tests hold the reference to);
* ``drop_layer`` (k): the first decoder layer that runs without the visual tokens (0-based; the paper's default 3);
* ``positions``: the rotary positions after the drop: "keep" (the full sequence's; this project's choice, the
  paper does not say).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from ...errors import ConfigError
from ..settings import from_mapping, to_mapping

CONFIG_KEY = "victor"
FORMAT_VERSION = 1
POSITION_SCHEMES = ("keep",)
#: The paper's default drop layer (about 10 % of Vicuna-7B's 32 layers).
DEFAULT_DROP_LAYER = 3


def _count(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"victor {name} must be an integer of at least {minimum}, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class VictorConfig:
    registers: int = 8
    drop_layer: int = DEFAULT_DROP_LAYER
    positions: str = "keep"

    def __post_init__(self) -> None:
        _count(self.registers, "registers", 0)
        _count(self.drop_layer, "drop_layer", 0)
        if self.positions not in POSITION_SCHEMES:
            raise ConfigError(f"victor positions must be one of {', '.join(POSITION_SCHEMES)}, got "
                              f"{self.positions!r}")

    def check_against(self, num_layers: int) -> None:
        """One line when the settings do not fit a language model of ``num_layers`` decoder layers."""
        if self.drop_layer > num_layers:
            raise ConfigError(f"victor drop layer {self.drop_layer} is past the language model's {num_layers} "
                              f"layers: choose 0..{num_layers} (--drop-layer)")
        if self.registers == 0 and self.drop_layer < num_layers:
            raise ConfigError("victor with 0 registers drops the image with nothing to summarise it: give "
                              "--registers of at least 1 (0 is only the stock model, with --drop-layer "
                              f"{num_layers})")

    def to_dict(self) -> dict[str, Any]:
        return to_mapping(self, FORMAT_VERSION)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "VictorConfig":
        return from_mapping(cls, data, CONFIG_KEY, FORMAT_VERSION)
