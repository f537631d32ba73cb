"""Reading and writing checkpoints.

* :func:`convert_official`: an official PuMer checkpoint (``config.json`` + ``pytorch_model.bin``
  or ``model.safetensors`` with the official key names) to a pumer-export checkpoint;
* :func:`apply_pumer`: a Hugging Face ViLT VQA checkpoint plus PuMer settings to a pumer-export
  checkpoint (training-free);
* :func:`load_pumer_model`: a pumer-export checkpoint back into a
  :class:`~pumer_export.modeling_vilt.PumerViltForQuestionAnswering`.

A pumer-export checkpoint is a Hugging Face ViLT checkpoint (``config.json`` +
``model.safetensors``) whose ``config.json`` also holds the PuMer settings under ``"pumer"``;
stock transformers can still load it as a plain ``ViltForQuestionAnswering``. Every problem
raises :class:`~pumer_export.errors.CheckpointError` (one line); outputs are written atomically.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, Mapping

import torch

from .config import CONFIG_KEY, PumerConfig, set_pumer_config
from .errors import CheckpointError, ConfigError, PumerExportError, missing
from .fsutil import atomic_output_dir

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
PYTORCH_FILE = "pytorch_model.bin"
#: Files copied along from a source checkpoint so the processor can be rebuilt locally.
PROCESSOR_FILES = (
    "preprocessor_config.json",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)
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
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    return data


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


# -------------------------------------------------------------------- official format
def official_to_hf_key(key: str) -> str | None:
    """The transformers ViLT name of an official PuMer ViLT weight (None for dropped buffers)."""
    if key == "vilt.text_embeddings.position_ids":
        return None
    rules = [
        (r"^vilt\.text_embeddings\.", "vilt.embeddings.text_embeddings."),
        (r"^vilt\.token_type_embeddings\.", "vilt.embeddings.token_type_embeddings."),
        (r"^vilt\.transformer\.cls_token$", "vilt.embeddings.cls_token"),
        (r"^vilt\.transformer\.pos_embed$", "vilt.embeddings.position_embeddings"),
        (r"^vilt\.transformer\.patch_embed\.proj\.", "vilt.embeddings.patch_embeddings.projection."),
        (r"^vilt\.transformer\.norm\.", "vilt.layernorm."),
        (r"^vilt\.pooler\.", "vilt.pooler."),
        (r"^vqa_classifier\.", "classifier."),
    ]
    for pattern, replacement in rules:
        if re.match(pattern, key):
            return re.sub(pattern, replacement, key)
    block = re.match(r"^vilt\.transformer\.blocks\.(\d+)\.(.+)$", key)
    if block:
        index, rest = block.groups()
        parts = {
            "norm1.": "layernorm_before.",
            "attn.proj.": "attention.output.dense.",
            "norm2.": "layernorm_after.",
            "mlp.fc1.": "intermediate.dense.",
            "mlp.fc2.": "output.dense.",
        }
        for old, new in parts.items():
            if rest.startswith(old):
                return f"vilt.encoder.layer.{index}.{new}{rest[len(old):]}"
    return key  # unknown: reported as unexpected by load_state_strict


def official_state_dict_to_hf(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename official weights to transformers' ViLT names, splitting fused qkv into q, k, v."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in weights.items():
        qkv = re.match(r"^vilt\.transformer\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)$", key)
        if qkv:
            index, kind = qkv.groups()
            if tensor.shape[0] % 3:
                raise CheckpointError(f"{key} has {tensor.shape[0]} rows, not a multiple of 3 (q, k, v)")
            for name, part in zip(("query", "key", "value"), tensor.chunk(3, dim=0)):
                out[f"vilt.encoder.layer.{index}.attention.attention.{name}.{kind}"] = part.clone()
            continue
        new = official_to_hf_key(key)
        if new is not None:
            out[new] = tensor
    return out


def official_config_to_hf(official: Mapping[str, Any], weights: Mapping[str, torch.Tensor]):
    """A transformers ``ViltConfig`` (with PuMer settings) for an official PuMer ViLT config."""
    from transformers import ViltConfig

    from .modeling_vilt import TEXT_LAYER_NORM_EPS_KEY

    missing = [k for k in ("hidden_size", "num_layers", "num_heads", "vocab_size", "max_text_len") if k not in official]
    if missing:
        raise CheckpointError(f"official config.json lacks {', '.join(missing)}; is this an official PuMer ViLT checkpoint?")
    archs = official.get("architectures") or ["ViltForQuestionAnswering"]
    if "ViltForQuestionAnswering" not in archs:
        raise CheckpointError(f"official checkpoint architecture {archs} is not supported; only VQA (ViltForQuestionAnswering) is")
    if "vqa_label_size" not in official:
        raise CheckpointError("official config.json lacks vqa_label_size; only VQA checkpoints are supported")
    pos = weights.get("vilt.transformer.pos_embed")
    patch = weights.get("vilt.transformer.patch_embed.proj.weight")
    if pos is None or patch is None:
        raise CheckpointError("official weights lack vilt.transformer.pos_embed or patch_embed.proj.weight")
    grid = int(round((pos.shape[1] - 1) ** 0.5))
    patch_size = int(patch.shape[-1])
    hidden = int(official["hidden_size"])
    config = ViltConfig(
        vocab_size=int(official["vocab_size"]),
        hidden_size=hidden,
        num_hidden_layers=int(official["num_layers"]),
        num_attention_heads=int(official["num_heads"]),
        intermediate_size=4 * hidden,  # the official blocks ignore mlp_ratio
        hidden_act="gelu",
        max_position_embeddings=int(official["max_text_len"]),
        modality_type_vocab_size=int(official.get("token_types", 2)),
        image_size=grid * patch_size,
        patch_size=patch_size,
        layer_norm_eps=1e-6,
        qkv_bias=True,
        num_labels=int(official["vqa_label_size"]),
        max_image_length=-1,
    )
    setattr(config, TEXT_LAYER_NORM_EPS_KEY, 1e-12)
    config.architectures = ["ViltForQuestionAnswering"]
    config.pumer_source = "official"
    set_pumer_config(config, PumerConfig.from_official(official))
    return config


def _save(model, dst: Path, force: bool, source: Path) -> None:
    with atomic_output_dir(dst, force=force) as tmp:
        model.save_pretrained(tmp)
        for name in PROCESSOR_FILES:
            if (source / name).is_file():
                shutil.copy2(source / name, tmp / name)


def convert_official(src: str | Path, dst: str | Path, *, force: bool = False):
    """Convert an official PuMer ViLT checkpoint into a pumer-export checkpoint at ``dst``."""
    from .modeling_vilt import PumerViltForQuestionAnswering

    dst = Path(dst)
    if dst.exists() and not force:
        raise CheckpointError(f"{dst} already exists; pass --force to overwrite it")
    source = resolve_checkpoint(src)
    official = read_config_json(source)
    if CONFIG_KEY in official:
        raise CheckpointError(f"{source} is already a pumer-export checkpoint; nothing to convert")
    if "num_layers" not in official and official.get("model_type") == "vilt":
        raise CheckpointError(f"{source} is a Hugging Face ViLT checkpoint, not an official PuMer one; use `pumer-export apply`")
    weights = load_weights(source)
    try:
        config = official_config_to_hf(official, weights)
        model = PumerViltForQuestionAnswering(config).eval()
    except ConfigError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    load_state_strict(model, official_state_dict_to_hf(weights), source)
    _save(model, dst, force, source)
    return model


def apply_pumer(src: str | Path, dst: str | Path, pumer: PumerConfig, *, force: bool = False):
    """Write a pumer-export checkpoint: the Hugging Face ViLT VQA checkpoint ``src`` with ``pumer``."""
    dst = Path(dst)
    if dst.exists() and not force:
        raise CheckpointError(f"{dst} already exists; pass --force to overwrite it")
    source = resolve_checkpoint(src)
    config = _hf_vilt_config(source)
    set_pumer_config(config, pumer)
    model = _build_and_load(config, source)
    _save(model, dst, force, source)
    return model


def _hf_vilt_config(source: Path):
    from transformers import ViltConfig

    data = read_config_json(source)
    model_type = data.get("model_type")
    if "num_layers" in data and "num_hidden_layers" not in data:
        raise CheckpointError(f"{source} is an official PuMer checkpoint; convert it with `pumer-export convert`")
    if model_type != "vilt":
        hint = " (an official PuMer checkpoint? use `pumer-export convert`)" if "num_layers" in data else ""
        raise CheckpointError(f"{source}: model_type is {model_type!r}, not 'vilt'; only ViLT is supported{hint}")
    try:
        return ViltConfig.from_dict(data)
    except Exception as exc:  # strict dataclass validation of transformers
        raise CheckpointError(f"{source}/config.json is not a valid ViLT config ({exc})".splitlines()[0]) from None


def _build_and_load(config, source: Path):
    from .modeling_vilt import PumerViltForQuestionAnswering

    try:
        model = PumerViltForQuestionAnswering(config)
    except (PumerExportError, ValueError) as exc:  # transformers checks shapes with ValueError
        raise CheckpointError(f"{source}: invalid model configuration: {exc}") from None
    load_state_strict(model, load_weights(source), source)
    return model.eval()


def load_pumer_config(path: str | Path):
    """The ``ViltConfig`` of a pumer-export checkpoint, checked (PuMer settings present and valid)."""
    from .config import get_pumer_config
    from .modeling_vilt import check_model_config

    source = Path(path)
    if source.is_file():
        raise CheckpointError(f"{source} is a file; pass the checkpoint directory that holds config.json")
    if not source.is_dir():
        raise CheckpointError(f"{source}: no such checkpoint directory")
    if CONFIG_KEY not in read_config_json(source):
        raise CheckpointError(
            f"{source} is not a pumer-export checkpoint (config.json has no '{CONFIG_KEY}' settings); "
            "create one with `pumer-export apply` or `pumer-export convert`"
        )
    config = _hf_vilt_config(source)
    try:
        get_pumer_config(config)
        check_model_config(config)
    except ConfigError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    return config


def load_pumer_model(path: str | Path):
    """Load a pumer-export checkpoint (a directory made by ``convert`` or ``apply``)."""
    return _build_and_load(load_pumer_config(path), Path(path))
