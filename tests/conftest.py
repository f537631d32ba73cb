"""Shared fixtures: the official-format test checkpoint, tiny models, a CLI runner."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

# As the CLI sets it: no per-file bars from transformers / huggingface_hub in captured output.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

DATA = Path(__file__).parent / "data"
OFFICIAL = DATA / "pumer_official_vilt_small"


@pytest.fixture(scope="session")
def official_dir() -> Path:
    """The small official-format PuMer checkpoint with its inputs and the official outputs."""
    return OFFICIAL


@pytest.fixture(scope="session")
def official_inputs() -> dict[str, torch.Tensor]:
    """Inputs of the official fixture as model inputs (float pixels and the HF-style pixel mask)."""
    from safetensors.torch import load_file

    raw = load_file(str(OFFICIAL / "inputs_A.safetensors"))
    pixels = (raw["pixel_values_uint8"].float() / 255.0 - 0.5) / 0.5
    return {
        "input_ids": raw["input_ids"],
        "attention_mask": raw["attention_mask"],
        "token_type_ids": raw["token_type_ids"],
        "pixel_values": pixels,
        "pixel_mask": (pixels.sum(1) != 0).long(),
    }


@pytest.fixture(scope="session")
def converted_official(tmp_path_factory) -> Path:
    """The official fixture converted once per session to a pumer-export checkpoint."""
    from pumer_export.checkpoints import convert_official

    dst = tmp_path_factory.mktemp("converted") / "official-small"
    convert_official(OFFICIAL / "model", dst)
    return dst


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A saved tiny pumer-export checkpoint (random weights, layers 1 and 3 reduce)."""
    from pumer_export.models.vilt.presets import tiny_vilt_model

    dst = tmp_path_factory.mktemp("tiny") / "tiny-pumer"
    tiny_vilt_model(seed=0).save_pretrained(dst)
    return dst


@pytest.fixture
def cli(capsys):
    """Run ``pumer-export`` in-process: returns (exit code, stdout, stderr)."""
    from pumer_export.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse usage errors
            code = exc.code
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def one_line_error(code, err, *fragments):
    """A user mistake: exit status 2 and one line ``error: ...`` that names each of ``fragments``."""
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def interrupt_after_first_save(monkeypatch, module, run) -> None:
    """``run()`` killed right after ``module._save`` first writes its output (a training run stopped after its first
    epoch, as Ctrl-C would stop it); the real ``_save`` is back afterwards."""
    real_save = module._save

    def save_then_stop(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "_save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(module, "_save", real_save)


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def random_smarttrim_meter(settings, seed: int = 3):
    """A tiny METER with SmartTrim-style trimmers at ``settings``' locations, random trimmer weights (decisions that
    differ per token and sample, as trained ones do) and tau just above the median margin of the first trimmer (so
    samples keep different counts, and no margin sits on tau)."""
    from pumer_export.models.meter.presets import random_inputs, tiny_meter_model
    from pumer_export.models.meter.smarttrim import attach

    base = tiny_meter_model(seed=0)
    base.set_pumer_config(base.pumer_config.without_reduction())
    model = attach(base, settings)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.smarttrim.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
        records = model(**random_inputs(base.config, 6, seed=2), output_trim_records=True).trim_records
    margins = torch.tensor([m for sample in records[0]["image_margins"] for m in sample.values()])
    model.set_smarttrim_config(model.smarttrim_config.replace(tau=float(margins.median()) + 1e-4))
    return model
