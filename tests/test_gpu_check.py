"""The one GPU check script (tests/gpu_check.py): what can be checked without a GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gpu_check

SCRIPT = Path(gpu_check.__file__)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: the script would run its checks")
def test_without_a_gpu_it_says_so_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "r")], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "no CUDA GPU" in proc.stderr and "pytest -m emulation" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_timed_shapes_are_the_vilt_b32_schedule():
    counts = gpu_check.vilt_b32_layer_counts()
    assert [(c.layer, c.image_in, c.keep, c.image_out, c.text_in, c.text_out) for c in counts] == [
        (2, 145, 131, 87, 40, 32), (5, 87, 78, 52, 32, 26), (8, 52, 47, 31, 26, 21),
    ]


def test_report_files(tmp_path):
    result = {
        "environment": {"gpu": "H100", "sm": "90", "torch": "2.x", "cuda": "12.x"},
        "steps": [{"name": "build extension", "status": "passed", "detail": "40 s"},
                  {"name": "compute-sanitizer racecheck", "status": "failed", "detail": "1 hazard"}],
        "timings": [{"batch": 32, "layer": 2, "tokens": 185, "prune_ms": 0.02, "merge_image_ms": 0.03,
                     "merge_text_ms": 0.01, "kernels_ms": 0.06, "encoder_layer_ms": 0.6, "kernels_vs_layer": 0.1}],
        "passed": False,
    }
    gpu_check.write_report(tmp_path, result)
    assert json.loads((tmp_path / "gpu_check.json").read_text()) == result
    md = (tmp_path / "gpu_check.md").read_text()
    assert md.startswith("# PuMer GPU check: FAILED")
    assert "| compute-sanitizer racecheck | failed | 1 hazard |" in md
    assert "| 32 | 2 | 185 | 0.0200 | 0.0300 | 0.0100 | 0.0600 | 0.6000 | 10.0 % |" in md
