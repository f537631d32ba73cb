"""PuMer settings: which layers reduce tokens, by how much, and how.

A :class:`PumerConfig` is stored in a checkpoint's ``config.json`` under the key
``"pumer"`` (see :func:`get_pumer_config` / :func:`set_pumer_config`), so a saved
pumer-export checkpoint describes itself and loads back to an equal object.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Mapping

from .errors import ConfigError

#: Key under which the settings live in a model's config.json.
CONFIG_KEY = "pumer"
#: Version of the stored layout; bumped when the meaning of a field changes.
FORMAT_VERSION = 1

SCORE_MODES = ("mean", "first_head")
MASKING_MODES = ("official", "standard")

# Names the official PuMer code uses for the score source (``sim_method``).
_OFFICIAL_SCORE_NAMES = {"mh": "mean", "fh": "first_head", "first_head": "first_head"}


@dataclasses.dataclass(frozen=True)
class PumerConfig:
    """Token-reduction settings of a PuMer model.

    Attributes:
        reduce_layers: encoder layers (0-based) that prune and merge after their attention.
            Empty means no reduction: the baseline model.
        prune_ratio: fraction of the image tokens (image CLS included) that text-informed pruning drops.
        image_merge_ratio: fraction of the image tokens (counted before pruning) merged away by ToMe.
        text_merge_ratio: fraction of the current text tokens merged away by ToMe.
        score: how the text-to-image attention becomes one score per image token:
            ``"mean"`` over heads (official ``sim_method="mh"``) or ``"first_head"`` (``"fh"``).
        attention_masking: ``"official"``: PuMer's masked softmax (every position attends to itself,
            fractional mask weights, 1e-6 smoothing; what official checkpoints were trained with);
            ``"standard"``: an additive log-mask, identical to Hugging Face ViLT for 0/1 masks.
    """

    reduce_layers: tuple[int, ...] = ()
    prune_ratio: float = 0.0
    image_merge_ratio: float = 0.0
    text_merge_ratio: float = 0.0
    score: str = "mean"
    attention_masking: str = "standard"

    def __post_init__(self) -> None:
        layers = self.reduce_layers
        if isinstance(layers, (str, bytes)) or not isinstance(layers, Iterable):
            raise ConfigError(f"reduce_layers must be a list of layer indices, got {layers!r}")
        layers = tuple(layers)
        for layer in layers:
            if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
                raise ConfigError(f"reduce_layers must hold non-negative integers, got {layer!r}")
        duplicates = sorted({layer for layer in layers if layers.count(layer) > 1})
        if duplicates:
            raise ConfigError(f"reduce_layers lists layer(s) {duplicates} more than once; name each layer once")
        object.__setattr__(self, "reduce_layers", tuple(sorted(layers)))
        for name in ("prune_ratio", "image_merge_ratio", "text_merge_ratio"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"{name} must be a number in [0, 1), got {value!r}")
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {value}")
            object.__setattr__(self, name, float(value))
        if self.score not in SCORE_MODES:
            raise ConfigError(f"score must be one of {', '.join(SCORE_MODES)}, got {self.score!r}")
        if self.attention_masking not in MASKING_MODES:
            raise ConfigError(
                f"attention_masking must be one of {', '.join(MASKING_MODES)}, got {self.attention_masking!r}"
            )

    # ------------------------------------------------------------------ queries
    @property
    def enabled(self) -> bool:
        """True when at least one layer reduces tokens."""
        return bool(self.reduce_layers)

    def check_depth(self, num_layers: int) -> None:
        """Raise :class:`ConfigError` unless every reduce layer exists in a model of ``num_layers`` layers."""
        outside = [layer for layer in self.reduce_layers if layer >= num_layers]
        if outside:
            raise ConfigError(
                f"reduce_layers {outside} are outside the model's {num_layers} layers (valid: 0..{num_layers - 1})"
            )

    def without_reduction(self) -> "PumerConfig":
        """The same model without reducers (the baseline of every speedup)."""
        return dataclasses.replace(self, reduce_layers=())

    def replace(self, **changes: Any) -> "PumerConfig":
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["reduce_layers"] = list(self.reduce_layers)
        data["format_version"] = FORMAT_VERSION
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PumerConfig":
        if not isinstance(data, Mapping):
            raise ConfigError(f"PuMer settings must be a JSON object, got {type(data).__name__}")
        data = dict(data)
        version = data.pop("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ConfigError(
                f"PuMer settings have format_version {version}; this pumer-export reads version {FORMAT_VERSION}"
            )
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown PuMer setting(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_official(cls, official: Mapping[str, Any]) -> "PumerConfig":
        """Settings from an official PuMer ``config.json`` (``reduce_layers``, ``prune_r``, ``merge_r``, ...)."""
        merge_style = official.get("merge_style", "tome")
        if merge_style != "tome":
            raise ConfigError(
                f"official merge_style {merge_style!r} is not supported; only 'tome' (the released checkpoints') is"
            )
        sim_method = official.get("sim_method", "mh")
        if sim_method not in _OFFICIAL_SCORE_NAMES:
            raise ConfigError(
                f"official sim_method {sim_method!r} is not supported; use one of {sorted(_OFFICIAL_SCORE_NAMES)}"
            )
        layers = official.get("reduce_layers") or ()
        return cls(
            reduce_layers=tuple(layers),
            prune_ratio=official.get("prune_r", 0.0) or 0.0,
            image_merge_ratio=official.get("merge_r", 0.0) or 0.0,
            text_merge_ratio=official.get("merge_text", 0.0) or 0.0,
            score=_OFFICIAL_SCORE_NAMES[sim_method],
            attention_masking="official",
        )


def get_pumer_config(model_config: Any) -> PumerConfig | None:
    """The PuMer settings stored in a transformers config, or None when it has none."""
    data = getattr(model_config, CONFIG_KEY, None)
    if data is None:
        return None
    if isinstance(data, PumerConfig):
        return data
    return PumerConfig.from_dict(data)


def set_pumer_config(model_config: Any, pumer: PumerConfig) -> None:
    """Store ``pumer`` in a transformers config (checked against the model's depth)."""
    pumer.check_depth(model_config.num_hidden_layers)
    setattr(model_config, CONFIG_KEY, pumer.to_dict())


def parse_layers(text: str) -> tuple[int, ...]:
    """Parse a CLI layer list such as ``"2,5,8"`` (at least one layer: an empty list would reduce nothing)."""
    text = text.strip()
    if not text:
        raise ConfigError("--layers is empty: name the reduce layers, e.g. --layers 2,5,8 (a checkpoint without "
                          "reduce layers is the plain baseline; use the Hugging Face checkpoint itself for that)")
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"--layers must be comma-separated integers such as 2,5,8, got {text!r}") from None
