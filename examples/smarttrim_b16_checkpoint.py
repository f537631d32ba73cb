"""A METER-B/16-shaped checkpoint (random weights) with SmartTrim-style trimmers, tau set so that it keeps about
half of the FLOPs: what `bench` needs to show how the data-dependent compaction performs at real model widths.

    python examples/smarttrim_b16_checkpoint.py b16st
    pumer-export bench b16st --backends ort --batch-sizes 1,8 --iters 10 --threads 2 --memory off --text-length 40

Random trimmer weights give large margins, so tau is found by bisection on the realised FLOPs share of four
random inputs (it may stop short of exactly half; the bench reports the realised counts of its own inputs).
"""

from __future__ import annotations

import dataclasses
import sys

import torch

from pumer_export.methods.smarttrim import SmartTrimConfig, attach
from pumer_export.models.meter.presets import meter_b16_model, random_inputs


def main(out: str, share: float = 0.5) -> None:
    base = meter_b16_model(image_size=288)
    # SmartTrim needs standard masking (the preset follows the official PuMer's P7 softmax)
    base.set_pumer_config(dataclasses.replace(base.pumer_config.without_reduction(), attention_masking="standard"))
    layers = tuple(range(base.config.num_hidden_layers))
    model = attach(base, SmartTrimConfig(cross_layers=layers, vit_layers=(4, 8), head_layers=layers))
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for parameter in model.smarttrim.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    inputs = random_inputs(base.config, 4, seed=1, text_length=40, min_text_length=40)

    def kept(tau: float) -> float:
        model.set_smarttrim_config(model.smarttrim_config.replace(tau=tau, head_tau=-1e9))  # heads: all kept
        return 1 / model.trim_statistics([inputs])["flop_ideal"]["per_sample"]

    low, high = -20.0, 20.0
    for _ in range(14):
        middle = (low + high) / 2
        low, high = (middle, high) if kept(middle) > share else (low, middle)
    print(f"tau {(low + high) / 2:.3f}: {kept((low + high) / 2):.0%} of the FLOPs kept on the calibration inputs")
    model.save_pretrained(out)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "b16st")
