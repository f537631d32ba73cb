"""Reading and writing checkpoints.

* :func:`convert_official`: an official PuMer ViLT or METER checkpoint (``config.json`` + ``pytorch_model.bin``
  or ``model.safetensors`` with the official key names) to a pumer-export checkpoint (the family converts);
* :func:`apply_pumer`: a Hugging Face ViLT VQA checkpoint plus PuMer settings to a pumer-export
  checkpoint (training-free);
* :func:`load_pumer_model`: a pumer-export checkpoint back into its family's model
  (:mod:`pumer_export.models`).

A pumer-export checkpoint is a transformers-style checkpoint (``config.json`` + ``model.safetensors``) whose
``config.json`` also holds the PuMer settings under ``"pumer"``; a ViLT one still loads in stock transformers as a
plain ``ViltForQuestionAnswering``. Every problem
raises :class:`~pumer_export.errors.CheckpointError` (one line); outputs are written atomically.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from .config import CONFIG_KEY, PumerConfig, set_pumer_config
from .errors import CheckpointError, ConfigError, PumerExportError, missing
from .fsutil import atomic_output_dir, read_json_object
from .processing import PROCESSOR_FILES

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
PYTORCH_FILE = "pytorch_model.bin"
#: Buffers transformers does not persist; some older checkpoints still carry them.
_IGNORED_KEYS = re.compile(r".*\.(position_ids|token_type_ids)$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


# ------------------------------------------------------------------------ locating
def resolve_checkpoint(source: str | Path) -> Path:
    """A local checkpoint directory for ``source`` (a directory, or a hub id to download)."""
    path = Path(source)
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{path} is a file; pass the checkpoint directory that holds config.json")
        return path
    text = str(source)
    if not _HUB_ID.match(text):
        raise CheckpointError(str(missing(text, "checkpoint", "pass a local checkpoint directory or a hub id org/name")))
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(
            text, allow_patterns=[CONFIG_FILE, "*.safetensors", "*.bin", "*.index.json", *PROCESSOR_FILES]
        )
    except Exception as exc:  # network, authentication, missing repo: all user-facing
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{text} is not a local directory and could not be downloaded from the hub ({reason}); "
            "download it first and pass the local directory"
        ) from None
    return Path(local)


def read_config_json(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory} has no {CONFIG_FILE}; is it a checkpoint directory?")
    return read_json_object(path, error=CheckpointError)


def load_weights(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint directory (safetensors, sharded safetensors, or a PyTorch .bin)."""
    from safetensors.torch import load_file

    candidates = [directory / SAFETENSORS_FILE]
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{index} is not a valid shard index ({exc})") from None
        candidates = [directory / shard for shard in shards]
    elif not candidates[0].is_file():
        candidates = [directory / PYTORCH_FILE]
    if not all(path.is_file() for path in candidates):
        missing = next(path for path in candidates if not path.is_file())
        raise CheckpointError(
            f"{directory} has no weights: expected {SAFETENSORS_FILE} or {PYTORCH_FILE} (missing {missing.name})"
        )
    weights: dict[str, torch.Tensor] = {}
    for path in candidates:
        try:
            if path.suffix == ".bin":
                loaded = torch.load(path, map_location="cpu", weights_only=True)
                if isinstance(loaded, Mapping) and "state_dict" in loaded and isinstance(loaded["state_dict"], Mapping):
                    loaded = loaded["state_dict"]
            else:
                loaded = load_file(str(path))
        except Exception as exc:  # corrupt or truncated files raise many different types
            raise CheckpointError(f"cannot read weights {path}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
        if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
            raise CheckpointError(f"{path} does not hold a state dict of tensors")
        weights.update(loaded)
    return weights


def model_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 identifying a model's weights and architecture (not its PuMer settings, stored apart).

    Exports record it (``pumer.model_sha256``), so a reused export or engine is known to come from the same
    checkpoint: same config (without ``"pumer"``) and the same tensors, bit for bit.
    """
    import hashlib

    digest = hashlib.sha256()
    config = {k: v for k, v in model.config.to_dict().items() if k not in (CONFIG_KEY, "transformers_version")}
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def _few(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def load_state_strict(model: torch.nn.Module, weights: Mapping[str, torch.Tensor], source: Path) -> None:
    """Load ``weights`` into ``model``; any missing, unexpected or mis-shaped weight is an error."""
    weights = {k: v for k, v in weights.items() if not _IGNORED_KEYS.match(k)}
    expected = {k: v for k, v in model.state_dict().items() if not _IGNORED_KEYS.match(k)}
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing:
        raise CheckpointError(f"{source}: {len(missing)} weight(s) missing: {_few(missing)}")
    if unexpected:
        raise CheckpointError(f"{source}: {len(unexpected)} unexpected weight(s): {_few(unexpected)}")
    wrong = [f"{k} {tuple(weights[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items()
             if tuple(weights[k].shape) != tuple(v.shape)]
    if wrong:
        raise CheckpointError(f"{source}: weight shape mismatch: {_few(wrong, 2)}")
    model.load_state_dict(weights, strict=False)


def _save(model, dst: Path, force: bool, source: Path, processor: Path | None = None) -> None:
    """Write ``model`` to ``dst`` with the source checkpoint's processor files, or those of ``processor``."""
    from .processing import copy_processor_files

    with atomic_output_dir(dst, force=force) as tmp:
        model.save_pretrained(tmp)
        copy_processor_files(source, tmp)
        if processor is not None:
            copy_processor_files(processor, tmp)


def _family_of_official(source: Path, data: dict[str, Any]):
    from . import models

    for name in models.FAMILIES:
        family = models.get(name)
        if family.TASK == "vqa" and family.is_official(data):
            return family
    if CONFIG_KEY in data:
        raise CheckpointError(f"{source} is already a pumer-export checkpoint; nothing to convert")
    if data.get("model_type") == "vilt":
        raise CheckpointError(f"{source} is a Hugging Face ViLT checkpoint, not an official PuMer one; "
                              "use `pumer-export apply`")
    raise CheckpointError(f"{source} is not an official PuMer ViLT or METER checkpoint (config.json has neither "
                          "ViLT's num_layers nor METER's model_type 'meter' with num_top_layer)")


def convert_official(src: str | Path, dst: str | Path, *, force: bool = False, processor: str | Path | None = None):
    """Convert an official PuMer ViLT or METER checkpoint into a pumer-export checkpoint at ``dst`` (with the
    processor files of ``processor`` when given: official checkpoints carry none)."""
    dst = Path(dst)
    if dst.exists() and not force:
        raise CheckpointError(f"{dst} already exists; pass --force to overwrite it")
    source = resolve_checkpoint(src)
    official = read_config_json(source)
    family = _family_of_official(source, official)
    model = family.convert_official(source, official, load_weights(source))
    _save(model, dst, force, source, Path(processor) if processor is not None else None)
    return model


def apply_pumer(src: str | Path, dst: str | Path, pumer: PumerConfig, *, force: bool = False,
                keep_masking: bool = False):
    """Write a pumer-export checkpoint: the Hugging Face ViLT VQA checkpoint ``src`` with ``pumer``; with
    ``keep_masking`` a source that already has PuMer settings keeps its attention masking (it was trained so)."""
    from . import models

    dst = Path(dst)
    if dst.exists() and not force:
        raise CheckpointError(f"{dst} already exists; pass --force to overwrite it")
    source = resolve_checkpoint(src)
    data = read_config_json(source)
    family = models.for_config(data, source)
    if family.TASK != "vqa":
        raise CheckpointError(f"{source} is a {family.TITLE} checkpoint: apply Victor or FastV to it with "
                              "`pumer-export apply SRC DST --method victor|fastv`")
    if not family.SUPPORTS_APPLY:
        raise CheckpointError(f"{source}: training-free PuMer (`apply`) is for Hugging Face ViLT checkpoints; "
                              f"{family.TITLE} checkpoints come from PuMer training: use `pumer-export convert`")
    config = family.config_from_dict(source, data)
    if keep_masking and isinstance(data.get(CONFIG_KEY), dict):
        pumer = pumer.replace(attention_masking=data[CONFIG_KEY].get("attention_masking", pumer.attention_masking))
    set_pumer_config(config, pumer)
    model = _build_and_load(family, config, source)
    _save(model, dst, force, source)
    return model


def retune_smarttrim(src: str | Path, dst: str | Path, *, tau: float | None = None, head_tau: float | None = None,
                     force: bool = False):
    """Write the SmartTrim checkpoint ``src`` to ``dst`` with other decision thresholds (the deployment knobs
    ``tau`` / ``head_tau``; None: unchanged); the weights and the trimmers' locations stay."""
    from . import methods

    dst = Path(dst)
    if dst.exists() and not force:
        raise CheckpointError(f"{dst} already exists; pass --force to overwrite it")
    source = Path(src)
    model = load_pumer_model(source)
    method = methods.for_model(model)
    if method.NAME != "smarttrim":
        raise CheckpointError(f"{source} is a {method.TITLE} checkpoint; --tau and --head-tau set the thresholds of "
                              "a SmartTrim checkpoint's trimmers (train them with `finetune --method smarttrim`)")
    settings = model.smarttrim_config
    model.set_smarttrim_config(settings.replace(tau=settings.tau if tau is None else tau,
                                                head_tau=settings.head_tau if head_tau is None else head_tau))
    _save(model, dst, force, source)
    return model


def _build_and_load(family, config, source: Path):
    from . import methods

    try:
        model = methods.for_config(config).build_model(family, config)
    except (PumerExportError, ValueError) as exc:  # transformers checks shapes with ValueError
        raise CheckpointError(f"{source}: invalid model configuration: {exc}") from None
    load_state_strict(model, load_weights(source), source)
    return model.eval()


def _load_config(path: str | Path):
    from . import methods, models
    from .config import get_pumer_config

    source = Path(path)
    if source.is_file():
        raise CheckpointError(f"{source} is a file; pass the checkpoint directory that holds config.json")
    if not source.is_dir():
        raise CheckpointError(f"{source}: no such checkpoint directory")
    data = read_config_json(source)
    family = models.for_config(data, source)
    if family.TASK != "vqa":
        raise CheckpointError(f"{source} is a {family.TITLE} checkpoint: this command takes ViLT and METER ones; "
                              f"{family.TITLE} checkpoints work with apply, info, onnx, validate, run, eval, bench, "
                              "finetune and pretrained")
    if CONFIG_KEY not in data:
        how = "`pumer-export apply` or `pumer-export convert`" if family.SUPPORTS_APPLY else "`pumer-export convert`"
        raise CheckpointError(
            f"{source} is not a pumer-export checkpoint (config.json has no '{CONFIG_KEY}' settings); create one "
            f"with {how}"
        )
    config = family.config_from_dict(source, data)
    try:
        get_pumer_config(config)
        family.check_config(config)
        method = methods.for_config(data)
        methods.require_family(method, family)
        method.settings(config)
    except (ConfigError, PumerExportError) as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    return family, config


def load_pumer_config(path: str | Path):
    """The model config of a pumer-export checkpoint of any family, checked (PuMer settings present and valid)."""
    return _load_config(path)[1]


def load_pumer_model(path: str | Path):
    """Load a pumer-export checkpoint (a directory made by ``convert`` or ``apply``) as its family's model."""
    family, config = _load_config(path)
    return _build_and_load(family, config, Path(path))
