"""``build`` and ``doctor`` without TensorRT: one-line errors, exit codes, nothing written.

TensorRT's absence is simulated by ``sys.modules["tensorrt"] = None`` (``import tensorrt`` then
raises ImportError), so these tests mean the same on a machine that has TensorRT. Nothing stands
in for TensorRT itself.
"""

from __future__ import annotations

import json
import sys

import onnx
import pytest

from pumer_export.cli import main
from pumer_export.tensorrt import INSTALL_HINT

from test_tensorrt_prepare import make_pumer_model, save


@pytest.fixture
def no_tensorrt(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)


@pytest.fixture
def model_path(tmp_path):
    return save(make_pumer_model(), tmp_path / "model.onnx")


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, [line for line in err.splitlines() if line.strip()]


def assert_nothing_written(directory, *keep):
    assert sorted(p.name for p in directory.iterdir()) == sorted(keep)


def test_build_without_tensorrt_one_line(no_tensorrt, model_path, capsys):
    out = model_path.parent / "model.plan"
    code, _, err = run_cli(capsys, "build", str(model_path), str(out), "--batch", "1:2:4", "--workspace", "1G",
                           "--timing-cache", str(model_path.parent / "cache.bin"))
    assert code == 2
    assert err == [f"error: TensorRT is not installed: {INSTALL_HINT}"]
    assert_nothing_written(model_path.parent, "model.onnx")


def test_build_accepts_an_export_directory(no_tensorrt, model_path, capsys):
    code, _, err = run_cli(capsys, "build", str(model_path.parent), str(model_path.parent / "m.plan"))
    assert code == 2 and err[-1].startswith("error: TensorRT is not installed")
    assert_nothing_written(model_path.parent, "model.onnx")


@pytest.mark.parametrize("extra, message", [
    (["--batch", "8:1:4"], "--batch 8:1:4: needs MIN <= OPT <= MAX"),
    (["--batch", "x"], "--batch expects MIN:OPT:MAX"),
    (["--workspace", "lots"], "--workspace expects a size"),
])
def test_build_reports_bad_options_before_tensorrt(no_tensorrt, tmp_path, capsys, extra, message):
    code, _, err = run_cli(capsys, "build", str(tmp_path / "missing.onnx"), str(tmp_path / "m.plan"), *extra)
    assert code == 2 and len(err) == 1 and message in err[0]
    assert_nothing_written(tmp_path)


def test_build_missing_onnx(no_tensorrt, tmp_path, capsys):
    code, _, err = run_cli(capsys, "build", str(tmp_path / "missing.onnx"), str(tmp_path / "m.plan"))
    assert code == 2 and err == [f"error: ONNX model {tmp_path / 'missing.onnx'} does not exist; check the path"]


def test_build_refuses_foreign_onnx(no_tensorrt, tmp_path, capsys):
    path = save(make_pumer_model(metadata={"pumer.op_spec_hash": None}), tmp_path / "model.onnx")
    code, _, err = run_cli(capsys, "build", str(path), str(tmp_path / "m.plan"))
    assert code == 2 and len(err) == 1 and "is not a pumer-export ONNX export" in err[0]


def test_build_refuses_other_op_spec(no_tensorrt, tmp_path, capsys):
    path = save(make_pumer_model(metadata={"pumer.op_spec_hash": "0" * 64}), tmp_path / "model.onnx")
    code, _, err = run_cli(capsys, "build", str(path), str(tmp_path / "m.plan"))
    assert code == 2 and len(err) == 1 and "re-export the model" in err[0]


def test_build_fixed_batch_mismatch(no_tensorrt, tmp_path, capsys):
    path = save(make_pumer_model(batch=2), tmp_path / "model.onnx")
    code, _, err = run_cli(capsys, "build", str(path), str(tmp_path / "m.plan"), "--batch", "1:8:32")
    assert code == 2 and len(err) == 1 and "--batch must be 2:2:2" in err[0]


def test_build_refuses_existing_output(no_tensorrt, model_path, capsys):
    out = model_path.parent / "model.plan"
    out.write_bytes(b"old")
    code, _, err = run_cli(capsys, "build", str(model_path), str(out))
    assert code == 2 and err == [f"error: {out} already exists; pass --force to overwrite it"]
    assert out.read_bytes() == b"old"
    code, _, err = run_cli(capsys, "build", str(model_path), str(out), "--force")
    assert code == 2 and "TensorRT is not installed" in err[0] and out.read_bytes() == b"old"


def test_build_missing_explicit_plugin_library(no_tensorrt, model_path, capsys):
    code, _, err = run_cli(capsys, "build", str(model_path), str(model_path.parent / "m.plan"),
                           "--plugins", str(model_path.parent / "libnope.so"))
    assert code == 2 and len(err) == 1 and "plugin library not found" in err[0] and "libnope.so" in err[0]


def test_doctor_table(no_tensorrt, capsys):
    code, out, err = run_cli(capsys, "doctor")
    assert code == 0
    for item in ("onnxruntime", "CPUExecutionProvider", "CUDA driver", "TensorRT", "plugin library",
                 "creator PumerPrune", "creator PumerMerge"):
        assert item in out
    assert f"TensorRT is not installed: {INSTALL_HINT}" in err
    assert any(line.startswith("TensorRT builds: not possible") and "TensorRT" in line for line in err)
    assert "Traceback" not in out + "\n".join(err)


def test_doctor_json(no_tensorrt, capsys, tmp_path):
    lib = tmp_path / "libpumer_plugins.so"
    lib.write_bytes(b"\x7fELF not really")
    code, out, _ = run_cli(capsys, "doctor", "--json", "--plugins", str(lib))
    assert code == 0
    report = json.loads(out)
    assert report["tensorrt"]["version"] is None and INSTALL_HINT in report["tensorrt"]["error"]
    assert report["ready"] == {"cpu_export": True, "tensorrt_build": False}
    assert "CPUExecutionProvider" in report["onnxruntime_providers"]
    status = {row["item"]: row["status"] for row in report["checks"]}
    assert status["TensorRT"] == "missing"
    assert status["plugin library"] == "ok"  # found; not loaded without TensorRT
    assert status["plugin op spec"] == "skipped"
    assert status["creator PumerPrune"] == status["creator PumerMerge"] == "skipped"
    assert report["versions"]["onnx"] == onnx.__version__


def test_plugin_library_that_is_not_a_shared_library(no_tensorrt, capsys, tmp_path):
    lib = tmp_path / "libpumer_plugins.so"
    lib.write_text("not a library")
    code, out, _ = run_cli(capsys, "doctor", "--json", "--plugins", str(lib))
    row = next(r for r in json.loads(out)["checks"] if r["item"] == "plugin library")
    assert row["status"] == "missing" and "not a shared library" in row["hint"]


def test_doctor_strict(no_tensorrt, capsys):
    code, _, _ = run_cli(capsys, "doctor", "--strict", "--json")
    assert code == 1


def test_build_help_lists_options(capsys):
    with pytest.raises(SystemExit) as info:
        main(["build", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--plugins", "--batch", "--timing-cache", "--workspace", "--fp16", "--force"):
        assert option in out
