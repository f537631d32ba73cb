"""SmartTrim-style settings (pumer-export design), stored in a checkpoint's config.json under ``"smarttrim"``.

Every field is this project's choice (the paper's method section could not be read; see the package doc):

* ``cross_layers``: the co-attention blocks that get one token trimmer per stream before them (default: all);
* ``vit_layers``: the image-tower blocks that get an image token trimmer before them (needed for more than ~1.6x
  fewer FLOPs on METER, where the cross blocks are ~40 % of the compute); default none;
* ``head_layers``: the co-attention blocks whose four attention modules (text / image x self / cross) get a head
  trimmer (default: all);
* ``tau``: the token decision ``keep_logit - drop_logit >= tau`` (a deployment knob, not from the paper; 0: the
  noise-free limit of hard Gumbel-softmax); ``head_tau`` the same for heads;
* ``width``: the trimmers' hidden width (default: half the model width; the paper's widths are unknown);
* ``keep_index``: which of the two logits means "keep" (1).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Mapping

from ...errors import ConfigError
from ..settings import from_mapping, to_mapping

CONFIG_KEY = "smarttrim"
FORMAT_VERSION = 1


def _layers(value: Any, name: str) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ConfigError(f"smarttrim {name} must be a list of layer indices, got {value!r}")
    layers = tuple(value)
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in layers):
        raise ConfigError(f"smarttrim {name} must hold non-negative integers, got {list(layers)}")
    if len(set(layers)) != len(layers):
        raise ConfigError(f"smarttrim {name} lists a layer twice: {list(layers)}")
    return tuple(sorted(layers))


@dataclasses.dataclass(frozen=True)
class SmartTrimConfig:
    cross_layers: tuple[int, ...] = ()
    vit_layers: tuple[int, ...] = ()
    head_layers: tuple[int, ...] = ()
    tau: float = 0.0
    head_tau: float = 0.0
    width: int | None = None
    keep_index: int = 1

    def __post_init__(self) -> None:
        for name in ("cross_layers", "vit_layers", "head_layers"):
            object.__setattr__(self, name, _layers(getattr(self, name), name))
        for name in ("tau", "head_tau"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
                raise ConfigError(f"smarttrim {name} must be a number (inf allowed: keep / drop everything), got "
                                  f"{value!r}")
            object.__setattr__(self, name, float(value))
        if self.width is not None and (isinstance(self.width, bool) or not isinstance(self.width, int)
                                       or self.width < 2):
            raise ConfigError(f"smarttrim width must be an integer of at least 2, got {self.width!r}")
        if self.keep_index not in (0, 1):
            raise ConfigError(f"smarttrim keep_index is 0 or 1, got {self.keep_index!r}")

    @property
    def enabled(self) -> bool:
        return bool(self.cross_layers or self.vit_layers or self.head_layers)

    def check_depth(self, cross_depth: int, vit_depth: int) -> None:
        for name, layers, depth in (("cross_layers", self.cross_layers, cross_depth),
                                    ("head_layers", self.head_layers, cross_depth),
                                    ("vit_layers", self.vit_layers, vit_depth)):
            outside = [layer for layer in layers if layer >= depth]
            if outside:
                raise ConfigError(f"smarttrim {name} {outside} are outside the model's {depth} layers")

    def replace(self, **changes: Any) -> "SmartTrimConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return to_mapping(self, FORMAT_VERSION)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SmartTrimConfig":
        return from_mapping(cls, data, CONFIG_KEY, FORMAT_VERSION)


def get_smarttrim_config(model_config: Any) -> SmartTrimConfig | None:
    data = getattr(model_config, CONFIG_KEY, None)
    if data is None:
        return None
    return data if isinstance(data, SmartTrimConfig) else SmartTrimConfig.from_dict(data)


def set_smarttrim_config(model_config: Any, settings: SmartTrimConfig, *, cross_depth: int, vit_depth: int) -> None:
    settings.check_depth(cross_depth, vit_depth)
    setattr(model_config, CONFIG_KEY, settings.to_dict())
