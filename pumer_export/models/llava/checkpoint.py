"""LLaVA checkpoints: a Hugging Face llava-hf folder (config.json, model.safetensors, the processor's files), stock or
with a decoder method's settings in config.json (``"victor"`` with ``register_token_id`` and the registers' weight
``victor_registers``; ``"fastv"``). One folder layout for all three; the method is read from the settings it carries.

* :func:`load` / :func:`load_processor`: a folder back into the model class of its method and its processor;
* :func:`save`: model and processor written atomically;
* :func:`apply`: a stock folder plus a method's settings -> a new folder (Victor's registers initialised, its
  ``<reg>`` placeholder added to the tokenizer when missing; FastV: settings only).

Every problem is one :class:`~pumer_export.errors.CheckpointError` line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import CheckpointError, ConfigError, PumerExportError
from . import REGISTER_TOKEN

#: Decoder methods with settings in config.json, in the order they are looked for.
METHOD_KEYS = ("victor", "fastv")


def method_of(data: dict[str, Any] | Any) -> str:
    """The method a config (config.json's contents or a loaded config) carries: "victor", "fastv" or "" (stock)."""
    for key in METHOD_KEYS:
        value = data.get(key) if isinstance(data, dict) else getattr(data, key, None)
        if value is not None:
            return key
    return ""


def model_class(method: str):
    from .fastv import FastVLlavaForConditionalGeneration
    from .stock import StockLlavaForConditionalGeneration
    from .victor import VictorLlavaForConditionalGeneration

    return {"": StockLlavaForConditionalGeneration, "victor": VictorLlavaForConditionalGeneration,
            "fastv": FastVLlavaForConditionalGeneration}[method]


def check_config(config, source: Any) -> None:
    """One line for a LLaVA config the toolchain cannot run: no image token, a vision layer list, a method's
    settings that do not fit."""
    image_token_id = getattr(config, "image_token_id", None)
    vocab = config.text_config.vocab_size
    if not isinstance(image_token_id, int) or not 0 <= image_token_id < vocab:
        raise CheckpointError(f"{source}: config.json has no usable image_token_id (got {image_token_id!r}); a "
                              "LLaVA checkpoint needs the id of its <image> placeholder")
    if not isinstance(config.vision_feature_layer, int):
        raise CheckpointError(f"{source}: vision_feature_layer {config.vision_feature_layer!r} lists several "
                              "layers; LLaVA checkpoints with one feature layer are supported")


def load(path: str | Path):
    """The model of a LLaVA checkpoint folder, in its method's class (stock without one), in eval mode."""
    from ...checkpoints import read_config_json
    from ...processing import quiet_transformers

    source = Path(path)
    if not source.is_dir():
        raise CheckpointError(f"{source}: no such checkpoint directory")
    data = read_config_json(source)
    if data.get("model_type") != "llava":
        raise CheckpointError(f"{source}: model_type {data.get('model_type')!r} is not a LLaVA checkpoint")
    method = method_of(data)
    try:
        with quiet_transformers():
            from transformers import LlavaConfig, LlavaForConditionalGeneration

            config = LlavaConfig.from_pretrained(source)
        check_config(config, source)
        model = model_class(method)(config)
        # transformers' own class reads every llava-hf key layout (its renaming of older names is keyed to it);
        # the method's weights (Victor's registers) are read from the files
        with quiet_transformers():
            stock = LlavaForConditionalGeneration.from_pretrained(source, config=config)
        state = stock.state_dict()
        if method == "victor":
            from ...checkpoints import load_weights

            weights = load_weights(source)
            if "victor_registers" not in weights:
                raise CheckpointError(f"{source}: config.json has Victor settings but the weights have no "
                                      "victor_registers")
            state["victor_registers"] = weights["victor_registers"]
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CheckpointError(f"{source}: the weights do not fit the model (missing {missing[:3]}, unexpected "
                                  f"{unexpected[:3]})")
    except CheckpointError:
        raise
    except (PumerExportError, ConfigError) as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{source}: cannot load the LLaVA checkpoint ({str(exc).splitlines()[0]})") from None
    return model.eval()


def load_processor(path: str | Path):
    """The checkpoint's ``LlavaProcessor`` (its files must be in the folder), checked against the model's image
    token."""
    from ...processing import quiet_transformers

    source = Path(path)
    try:
        with quiet_transformers():
            from transformers import LlavaProcessor

            processor = LlavaProcessor.from_pretrained(source)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{source}: no usable LLaVA processor files ({str(exc).splitlines()[0]}); a LLaVA "
                              "checkpoint folder carries its tokenizer and image processor") from None
    if processor.tokenizer.convert_tokens_to_ids(processor.image_token) in (None, processor.tokenizer.unk_token_id):
        raise CheckpointError(f"{source}: the tokenizer has no {processor.image_token} token")
    return processor


def check_processor(model, processor, source: Any) -> None:
    """One line when the processor's placeholders are not the model's ids (its expansion of an image is checked
    where prompts are made: :func:`pumer_export.generation.data.encode`)."""
    tokenizer = processor.tokenizer
    image_id = tokenizer.convert_tokens_to_ids(processor.image_token)
    if image_id != model.config.image_token_id:
        raise CheckpointError(f"{source}: the tokenizer's {processor.image_token} is id {image_id}, the model's "
                              f"image_token_id {model.config.image_token_id}")
    registers = getattr(model, "registers", 0)
    if registers:
        reg_id = tokenizer.convert_tokens_to_ids(REGISTER_TOKEN)
        if reg_id != model.config.register_token_id:
            raise CheckpointError(f"{source}: the tokenizer's {REGISTER_TOKEN} is id {reg_id}, the model's "
                                  f"register_token_id {model.config.register_token_id}")


def save(model, processor, dst: str | Path, *, force: bool = False) -> Path:
    """Model and processor into ``dst`` (written atomically)."""
    from ...fsutil import atomic_output_dir
    from ...processing import quiet_transformers

    dst = Path(dst)
    with atomic_output_dir(dst, force=force) as tmp, quiet_transformers():
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    return dst


def apply(src: str | Path, dst: str | Path, method: str, settings, *, force: bool = False, seed: int = 0):
    """``dst``: the stock LLaVA checkpoint ``src`` with ``method``'s ``settings`` (a VictorConfig or FastVConfig)."""
    from ...fsutil import check_destination
    from . import fastv, victor

    dst = Path(dst)
    check_destination(dst, force)
    model, processor = load(src), load_processor(src)
    check_processor(model, processor, src)
    if method_of(model.config):
        raise CheckpointError(f"{src} already carries {method_of(model.config)} settings; apply a method to a "
                              "stock LLaVA checkpoint")
    try:
        if method == "victor":
            register_id = register_token(model, processor)
            reduced = victor.attach(model, settings, register_id, seed=seed)
        elif method == "fastv":
            reduced = fastv.attach(model, settings)
        else:
            raise CheckpointError(f"unknown LLaVA method {method!r}; known: {', '.join(METHOD_KEYS)}")
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
    save(reduced, processor, dst, force=force)
    return reduced


def register_token(model, processor) -> int:
    """The id of Victor's ``<reg>`` placeholder in ``processor``'s tokenizer, added (and the embedding table grown
    to hold it) when the tokenizer lacks it; the registers replace its embedding, which is never read."""
    tokenizer = processor.tokenizer
    if REGISTER_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [REGISTER_TOKEN]},
                                     replace_extra_special_tokens=False)
    register_id = tokenizer.convert_tokens_to_ids(REGISTER_TOKEN)
    if register_id >= model.config.text_config.vocab_size:
        model.resize_token_embeddings(register_id + 1)
    return register_id
