"""The runnable example script (CPU) and the CI workflow example."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.mark.slow
def test_tiny_pipeline_script(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, str(EXAMPLES / "tiny_pipeline.py"), str(tmp_path / "out")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "validate pumer: PASSED" in proc.stdout and "validate baseline: PASSED" in proc.stdout
    assert (tmp_path / "out" / "bench" / "bench.json").is_file()
    assert (tmp_path / "out" / "validate" / "pumer" / "junit.xml").is_file()


def test_ci_workflow_example_gates_on_validate():
    text = (EXAMPLES / "github-actions-parity.yml").read_text()
    assert "pumer-export validate" in text and "junit.xml" in text
    try:
        import yaml
    except ImportError:
        return
    workflow = yaml.safe_load(text)
    assert "jobs" in workflow


def test_walkthrough_lists_the_commands():
    text = (EXAMPLES / "vilt_b32_walkthrough.md").read_text()
    for command in ("pumer-export apply", "pumer-export validate", "pumer-export bench", "pumer-export build"):
        assert command in text


def test_ort_profile_script_reports_the_function_bodies(tmp_path):
    from pumer_export.models.vilt.presets import tiny_vilt_model
    from pumer_export.onnx.export import export_onnx

    result = export_onnx(tiny_vilt_model(seed=0), tmp_path / "onnx", validate=False)
    proc = subprocess.run([sys.executable, str(EXAMPLES / "ort_profile.py"), str(result.path), "--runs", "2"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "kernel time per run" in proc.stdout and "in pumer function bodies" in proc.stdout
    body = float(proc.stdout.split("in pumer function bodies: ")[1].split(" ms")[0])
    assert body > 0  # the pumer nodes ran as their inlined bodies
