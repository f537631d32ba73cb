"""``pumer-export validate``: the whole parity check, usable from the command, the demo and tests."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

from ..errors import PumerExportError
from ..quantize import read_quantization
from .compare import Check, run_and_compare
from .onnxinfo import INPUT_NAMES, SETTING_KEYS, TensorInfo, canonical_dtype, check_export_of, read_onnx_info
from .tolerances import check_output_names, parse_tolerances

#: PuMer settings compared between the checkpoint and the export's metadata.


@dataclasses.dataclass
class ValidateOptions:
    onnx: Path | None = None
    engine: Path | None = None
    inputs: str | None = None
    questions: Any = None  # VQA questions (pumer_export.datasets.Question) to validate on instead of --inputs
    num_samples: int = 8
    batch_size: int = 4
    seed: int = 0
    atol: Sequence[str] | None = None
    rtol: Sequence[str] | None = None
    tie_tolerance: float | None = None
    ort_provider: str = "cpu"
    text_length: int | None = None
    image_size: tuple[int, int] | None = None
    dtype: str | None = None
    baseline: bool = False
    report_dir: Path | None = None
    verbose: bool = False


def expected_output_names(schedule) -> list[str]:
    """``logits`` and the reduction index outputs the reference produces for ``schedule``."""
    names = ["logits"]
    for counts in schedule.layers:
        if not counts.active:
            continue
        names.append(f"layer{counts.layer}.keep_idx")
        if counts.image_merge:
            names.append(f"layer{counts.layer}.image_slots")
        if counts.text_merge:
            names.append(f"layer{counts.layer}.text_slots")
    return names


def settings_checks(model, info, backend: str) -> list[Check]:
    """The export's stored reduction settings against the checkpoint's (when the export stored them)."""
    from .onnxinfo import method_differences

    method = method_differences(model, info)
    if method:
        return [Check(backend, "settings", False, "the export was made with other reduction settings: "
                      + "; ".join(method), "settings")]
    stored = info.pumer
    if stored is None:
        return [Check(backend, "settings", True, "the ONNX file stores no PuMer settings; compared outputs only",
                      "settings")]
    mine = model.pumer_config.to_dict()
    differing = []
    for key in SETTING_KEYS:
        if key in stored and key in mine:
            a, b = stored[key], mine[key]
            if isinstance(a, list) or isinstance(b, list):
                a, b = list(a), list(b)
            if a != b:
                differing.append(f"{key} {stored[key]} (export) vs {mine[key]} (checkpoint)")
    if differing:
        hint = ""
        if info.reduction is None and model.pumer_config.enabled:
            hint = " (a baseline export made with --no-reduction? validate it with --baseline)"
        return [Check(backend, "settings", False, "the export was made with other PuMer settings: " + "; ".join(differing)
                      + hint, "settings")]
    return [Check(backend, "settings", True, "the export's reduction settings match the checkpoint's", "settings")]


def _default_infos(names=INPUT_NAMES) -> list[TensorInfo]:
    import numpy as np

    return [TensorInfo(name, np.float32 if name == "pixel_values" else np.int64,
                       ["batch", 3, None, None] if name == "pixel_values" else ["batch", None]) for name in names]


def validate(model_dir: str | Path, options: ValidateOptions, *, model=None) -> dict[str, Any]:
    """Run the parity check; returns the report (``report["passed"]``) and writes it when asked.

    With ``options.baseline`` the reference runs without reducers (the checkpoint's weights), to
    validate a baseline export (``reduction=False``).
    """
    from .. import methods
    from ..checkpoints import load_pumer_model

    if options.onnx is None and options.engine is None:
        raise PumerExportError("nothing to validate: pass --onnx FILE and/or --engine FILE")
    if options.onnx is not None and not options.baseline and read_onnx_info(options.onnx).reduction is False:
        options = dataclasses.replace(options, baseline=True)  # the export's metadata says it is a baseline
    if model is None:
        model = load_pumer_model(Path(model_dir))
    for given, backend in ((options.onnx, "ort"), (options.engine, "trt")):
        if given is not None:
            methods.require_backend(model, backend, "validate")
    original = model.pumer_config
    if options.baseline:
        model.set_pumer_config(original.without_reduction())
    try:
        return _validate(Path(model_dir), options, model)
    finally:
        model.set_pumer_config(original)


def _validate(model_dir: Path, options: ValidateOptions, model) -> dict[str, Any]:
    from .environment import environment
    from .inputs import InputSpec, load_inputs
    from .report import write_reports
    from ..schedule import input_size
    from .runners import TorchRunner, match_output_names, ort_runner, trt_runner

    config = model.config
    info = read_onnx_info(options.onnx) if options.onnx is not None else None
    if info is not None:
        check_export_of(model, info)  # the family first: sizes and inputs of another family mislead
        info.require_model_inputs()

    # ---- fixed sizes: the export's, unless given (and then they must agree)
    image_size, text_length = input_size(config, options.image_size or (info.image_size if info else None),
                                         options.text_length or (info.text_length if info else None))
    if info is not None:
        if options.text_length and info.text_length and options.text_length != info.text_length:
            raise PumerExportError(f"--text-length {options.text_length} differs from the export's {info.text_length}; "
                                   "leave it out to use the export's")
        if options.image_size and info.image_size and tuple(options.image_size) != tuple(info.image_size):
            raise PumerExportError(
                f"--image-size {'x'.join(map(str, options.image_size))} differs from the export's "
                f"{'x'.join(map(str, info.image_size))}; leave it out to use the export's"
            )
    dtype = canonical_dtype(options.dtype) or (info.dtype if info else "fp32")
    tol = parse_tolerances(dtype, options.atol, options.rtol, options.tie_tolerance)
    quantization = read_quantization(info.metadata) if info is not None else None
    gate = None
    if quantization is not None:
        from .quantized import gate_for

        given = [flag for flag, value in (("--atol", options.atol), ("--rtol", options.rtol),
                                          ("--tie-tolerance", options.tie_tolerance)) if value]
        if given:
            raise PumerExportError(f"{', '.join(given)} set(s) float tolerances, and {info.path} is quantized "
                                   f"({quantization.get('label')}): it is gated by task metrics (top-1 agreement, "
                                   "answer scores, token decisions); drop the option")
        gate = gate_for(quantization.get("label", ""))
    schedule = model.token_schedule(text_length, tuple(image_size))
    ref_names = expected_output_names(schedule)
    check_output_names(tol, ref_names)

    from .. import models

    family = models.for_model(model)
    spec = InputSpec.from_infos(info.inputs if info else _default_infos(family.INPUT_NAMES), text_length=text_length,
                                image_size=tuple(image_size), vocab_size=config.vocab_size)
    inputs = load_inputs(options.inputs, questions=options.questions, config=config, spec=spec, model_dir=model_dir,
                         num_samples=options.num_samples, batch_size=options.batch_size, seed=options.seed)

    runners = []
    backends_used: dict[str, str] = {}
    checks: list[Check] = []
    if info is not None:
        mapping = match_output_names(ref_names, info.output_names)
        runners.append(ort_runner(info.path, options.ort_provider))
        backends_used[runners[-1].name] = f"ONNX Runtime {options.ort_provider.upper()} on `{info.path}`"
        checks += settings_checks(model, info, runners[-1].name)
    else:
        mapping = {name: name for name in ref_names}
    if options.engine is not None:
        runners.append(trt_runner(options.engine))
        backends_used[runners[-1].name] = f"TensorRT engine `{options.engine}`"
    reference = TorchRunner(model, spec_infos(info, spec), output_names=mapping)
    comparison = run_and_compare([reference, *runners], inputs.batches, tol, reference_details=reference.details,
                                 schedule=schedule, verbose=options.verbose, gate=gate)
    checks += comparison.pop("checks")
    report: dict[str, Any] = {
        "passed": all(c.passed for c in checks),
        "model": str(model_dir),
        "reference": {"device": "cpu", "dtype": str(next(model.parameters()).dtype).replace("torch.", "")},
        "backends_used": backends_used,
        "settings": {"text_length": text_length, "image_size": list(image_size), "dtype": dtype,
                     "pumer": model.pumer_config.to_dict(), "baseline": options.baseline,
                     "ort_provider": options.ort_provider,
                     "batch_size": options.batch_size, "seed": options.seed},
        "inputs": inputs.describe(),
        "tolerances": tol.to_dict() if gate is None else {"quantized": gate.to_dict()},
        "quantization": quantization,
        "token_schedule": schedule.to_dict(),
        "onnx": info.to_dict() if info else None,
        "engine": str(options.engine) if options.engine else None,
        "comparison": comparison,
        "checks": checks,
        "failures": [f"{c.backend}: {c.name}" for c in checks if not c.passed],
        "environment": environment(),
    }
    if options.report_dir is not None:
        report["files"] = [str(p) for p in write_reports(report, Path(options.report_dir))]
    return report


def spec_infos(info, spec) -> list[TensorInfo]:
    """The input declarations every runner shares (the ONNX model's, or the defaults)."""
    if info is not None:
        return info.inputs
    return [TensorInfo(name, spec.dtypes[name], ["batch"]) for name in spec.names]
