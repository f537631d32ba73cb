"""The engine sidecar: round trip, mismatch messages, atomic writes (no TensorRT)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pumer_export.errors import PumerExportError
from pumer_export.ops import op_spec_hash
from pumer_export.tensorrt import sidecar as sc
from pumer_export.tensorrt.engine import write_outputs

PLUGIN_SHA = "ab" * 32


def make_record(plan_bytes: bytes = b"plan", **overrides) -> dict:
    fields = dict(
        plan_name="model.plan",
        engine_sha256=sc.sha256_bytes(plan_bytes),
        engine_bytes=len(plan_bytes),
        tensorrt_version="10.3.0.30",
        gpu={"name": "Orin", "sm": "8.7", "driver_version": "12.6"},
        precision={"onnx_dtype": "float16", "strongly_typed": True, "fp16_flag": False, "description": "x"},
        profile={"batch": {"min": 1, "opt": 8, "max": 32}, "shapes": {}},
        plugin_library={"path": "/x/libpumer.so", "sha256": PLUGIN_SHA, "op_spec_hash": op_spec_hash()},
        onnx={"path": "/x/model.onnx", "sha256": "cd" * 32},
        op_spec_hash=op_spec_hash(),
        function_policy={"strip_functions": True},
    )
    fields.update(overrides)
    return sc.make_sidecar(**fields)


def matching_runtime(**overrides) -> sc.RuntimeInfo:
    fields = dict(tensorrt_version="10.3.0.30", gpu_sm="8.7", gpu_name="Orin", plugin_sha256=PLUGIN_SHA,
                  plugin_op_spec_hash=op_spec_hash(), op_spec_hash=op_spec_hash())
    fields.update(overrides)
    return sc.RuntimeInfo(**fields)


def test_sidecar_path():
    assert sc.sidecar_path("out/model.plan") == Path("out/model.plan.json")


def test_round_trip(tmp_path):
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"plan")
    record = make_record()
    path = sc.write_sidecar(plan, record)
    assert path == tmp_path / "model.plan.json"
    assert sc.read_sidecar(plan) == json.loads(json.dumps(record))
    data = sc.read_sidecar(plan)
    for key in ("tensorrt", "gpu", "precision", "profile", "plugin_library", "onnx", "op_spec_hash", "engine"):
        assert key in data
    assert data["format_version"] == sc.FORMAT_VERSION
    sc.check_sidecar(data, matching_runtime(), plan=plan)  # no error


def test_sha256_file(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc" * 1000)
    assert sc.sha256_file(path, chunk=7) == sc.sha256_bytes(b"abc" * 1000)


@pytest.mark.parametrize("runtime, message", [
    (matching_runtime(tensorrt_version="10.8.0.43"), "built with TensorRT 10.3.0.30, this is TensorRT 10.8.0.43"),
    (matching_runtime(gpu_sm="9.0", gpu_name="H100"), r"built for Orin \(SM 8.7\), this GPU is H100 \(SM 9.0\)"),
    (matching_runtime(plugin_sha256="ef" * 32), "plugin library sha256 abababababab, the loaded one is efefefefefef"),
    (matching_runtime(plugin_sha256=None), "none is loaded"),
    (matching_runtime(plugin_op_spec_hash="00" * 32), "the loaded plugin library implements op spec 000000000000"),
    (matching_runtime(op_spec_hash="11" * 32), "this pumer-export has 111111111111"),
])
def test_mismatch_messages(runtime, message):
    with pytest.raises(PumerExportError, match=message) as info:
        sc.check_sidecar(make_record(), runtime)
    text = str(info.value)
    assert "\n" not in text and "rebuild it with pumer-export build" in text


def test_all_mismatches_in_one_line():
    runtime = matching_runtime(tensorrt_version="11.0.0", gpu_sm="9.0", plugin_sha256="ef" * 32)
    problems = sc.sidecar_mismatches(make_record(), runtime)
    assert len(problems) == 3
    with pytest.raises(PumerExportError) as info:
        sc.check_sidecar(make_record(), runtime)
    assert str(info.value).count(";") >= 3 and "\n" not in str(info.value)


def test_build_number_and_unknowns_do_not_mismatch():
    assert sc.sidecar_mismatches(make_record(), matching_runtime(tensorrt_version="10.3.0.26")) == []
    unknown = sc.RuntimeInfo(tensorrt_version=None, gpu_sm=None, plugin_sha256=PLUGIN_SHA)
    assert sc.sidecar_mismatches(make_record(), unknown) == []
    no_plugins = make_record(plugin_library=None)
    assert sc.sidecar_mismatches(no_plugins, matching_runtime(plugin_sha256=None)) == []


def test_engine_file_changed(tmp_path):
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"another plan")
    with pytest.raises(PumerExportError, match="model.plan cannot be used here: the engine file does not match"):
        sc.check_sidecar(make_record(b"plan"), matching_runtime(), plan=plan)


def test_read_errors(tmp_path):
    plan = tmp_path / "model.plan"
    with pytest.raises(PumerExportError, match="model.plan.json is missing.*rebuild it with pumer-export build"):
        sc.read_sidecar(plan)
    side = sc.sidecar_path(plan)
    side.write_text("{not json")
    with pytest.raises(PumerExportError, match="not a readable sidecar"):
        sc.read_sidecar(plan)
    side.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(PumerExportError, match="not a pumer-export engine sidecar"):
        sc.read_sidecar(plan)
    side.write_text(json.dumps({**make_record(), "format_version": 99}))
    with pytest.raises(PumerExportError, match="format version 99"):
        sc.read_sidecar(plan)
    record = make_record()
    del record["gpu"]
    side.write_text(json.dumps(record))
    with pytest.raises(PumerExportError, match="lacks the field 'gpu'"):
        sc.read_sidecar(plan)


def test_write_outputs_atomic(tmp_path):
    out = tmp_path / "sub" / "model.plan"
    cache = tmp_path / "cache.bin"
    side = write_outputs(out, b"plan", make_record(), cache, b"cache")
    assert out.read_bytes() == b"plan" and side == sc.sidecar_path(out)
    assert sc.read_sidecar(out)["engine"]["sha256"] == sc.sha256_bytes(b"plan")
    assert cache.read_bytes() == b"cache"
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.plan", "model.plan.json"]


def test_write_outputs_failure_leaves_old_files(tmp_path):
    out = tmp_path / "model.plan"
    write_outputs(out, b"old", make_record(b"old"))
    bad = make_record(b"new")
    bad["unserializable"] = object()
    with pytest.raises(TypeError):
        write_outputs(out, b"new", bad)
    assert out.read_bytes() == b"old"
    assert sc.read_sidecar(out)["engine"]["sha256"] == sc.sha256_bytes(b"old")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.plan", "model.plan.json"]  # no temp files


def test_write_outputs_failure_writes_nothing(tmp_path):
    out = tmp_path / "model.plan"
    bad = make_record()
    bad["unserializable"] = object()
    with pytest.raises(TypeError):
        write_outputs(out, b"plan", bad)
    assert list(tmp_path.iterdir()) == []
