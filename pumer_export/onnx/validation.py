"""Validation of an exported file against the PyTorch reference in ONNX Runtime.

One ONNX Runtime session runs the file at several batch sizes (default 1 and 3) on seeded
random inputs; every output is compared with the reference model's:

* ``logits`` (values): the element-wise test ``|onnx - ref| <= atol + rtol * |ref|`` (numpy's
  ``allclose``); the table shows the max absolute error and the max relative error
  ``|onnx - ref| / max(|ref|, atol)``;
* the reduction indices (``layerL.keep_idx`` / ``image_slots`` / ``text_slots``): judged sample by
  sample by the same rule as ``pumer-export validate`` (:func:`pumer_export.parity.compare.judge_batch`):
  a differing decision that was a near-tie in the reference (within the tie tolerance of the export's
  dtype) is reported, not failed, and the float outputs of such a sample are left out of the value check.
  With ``index_agreement=1`` (fp32) any other difference fails; with a fraction below 1 the share of
  equal positions must reach it; with 0 the agreement is only reported.

Defaults (:data:`TOLERANCES`, validate's): fp32 ``atol=1e-4, rtol=1e-3``, indices exact. fp16 is compared with
the float32 reference (so float16 rounding of the whole network is part of the error):
``atol=rtol=1e-1`` on the logits, and index agreement is reported but not required
(``index_agreement=0``): float16 legitimately reorders near-tied scores, ``keep_idx`` is in
score order, and later layers then see different tokens (on a random-weights ViLT-B/32, whose
scores are nearly flat, fewer than 10% of the last layer's ``keep_idx`` positions agree while
the logits stay within 0.07). Pass ``index_agreement`` to require it.
A failure raises :class:`~pumer_export.errors.ParityError` naming the failing output.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ParityError, PumerExportError
from ..parity.compare import judge_batch
from ..parity.onnxinfo import is_index_output, is_kept_output
from ..parity.runners import reference_run
from ..parity.tolerances import DEFAULTS

DEFAULT_BATCH_SIZES = (1, 3)
#: The export gate's defaults. fp32: validate's atol / rtol (:data:`DEFAULTS`, one rule), indices exact (near-ties
#: apart). fp16: the whole float16 network against the float32 reference, wider than validate's fp16 default (see
#: the module doc), index agreement reported only.
TOLERANCES = {
    "fp32": {"atol": DEFAULTS["fp32"][0], "rtol": DEFAULTS["fp32"][1], "index_agreement": 1.0},
    "fp16": {"atol": 1e-1, "rtol": 1e-1, "index_agreement": 0.0},
}
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64}


@dataclasses.dataclass
class OutputCheck:
    batch_size: int
    name: str
    shape: tuple[int, ...]
    is_index: bool
    max_abs: float
    max_rel: float
    agreement: float
    ok: bool
    reason: str = ""
    near_ties: int = 0


@dataclasses.dataclass
class ValidationReport:
    path: Path
    dtype: str
    atol: float
    rtol: float
    index_agreement: float
    checks: list[OutputCheck]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def failures(self) -> list[OutputCheck]:
        return [check for check in self.checks if not check.ok]

    def table(self):
        from rich import box
        from rich.table import Table

        if self.index_agreement >= 1.0:
            index_rule = "indices exact"
        elif self.index_agreement > 0:
            index_rule = f"indices >= {self.index_agreement:.0%} equal"
        else:
            index_rule = "index agreement reported only"
        result = Table(title=f"ONNX Runtime vs PyTorch ({self.dtype}): atol {self.atol:g}, rtol {self.rtol:g}, "
                             f"{index_rule}", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        for column, justify in (("batch", "right"), ("output", "left"), ("shape", "left"), ("abs err", "right"),
                                ("rel err", "right"), ("equal", "right"), ("near-ties", "right"), ("ok", "left")):
            result.add_column(column, justify=justify, overflow="fold")
        for c in self.checks:
            values = (("", "", f"{c.agreement:.1%}", str(c.near_ties)) if c.is_index
                      else (f"{c.max_abs:.1e}", f"{c.max_rel:.1e}", "", ""))
            result.add_row(str(c.batch_size), c.name, "x".join(map(str, c.shape)), *values,
                           "[green]yes[/green]" if c.ok else "[red]NO[/red]")
        return result

    def raise_for_failure(self) -> None:
        if self.ok:
            return
        first = self.failures[0]
        more = len(self.failures) - 1
        raise ParityError(
            f"validation failed: output '{first.name}' at batch size {first.batch_size}: {first.reason}"
            + (f" ({more} more failing output(s), see the table)" if more else "")
            + "; for a per-sample report export with --skip-validation and run `pumer-export validate MODEL "
            "--onnx OUTDIR --report DIR`, or loosen --atol / --rtol / --index-agreement"
        )


def compare_values(name: str, batch_size: int, got: np.ndarray, ref: np.ndarray, *, atol: float,
                   rtol: float) -> OutputCheck:
    """Compare one float output with its reference (numpy's allclose rule)."""
    shape = tuple(ref.shape)
    if tuple(got.shape) != shape:
        return OutputCheck(batch_size, name, tuple(got.shape), False, float("inf"), float("inf"), 0.0, False,
                           f"shape {tuple(got.shape)} differs from the reference {shape}")
    got64, ref64 = got.astype(np.float64), ref.astype(np.float64)
    diff = np.abs(got64 - ref64)
    finite = bool(np.isfinite(got64).all())
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = float((diff / np.maximum(np.abs(ref64), atol)).max()) if diff.size else 0.0
    ok = finite and bool((diff <= atol + rtol * np.abs(ref64)).all())
    if not finite:
        reason = "non-finite values"
    elif not ok:
        reason = f"max abs err {max_abs:.3g}, max rel err {max_rel:.3g} exceed atol {atol:g} / rtol {rtol:g}"
    else:
        reason = ""
    return OutputCheck(batch_size, name, shape, False, max_abs, max_rel, 1.0, ok, reason)


def compare_indices(name: str, batch_size: int, got: np.ndarray, ref: np.ndarray, counts: dict[str, int] | None, *,
                    index_agreement: float) -> OutputCheck:
    """One index output, from the shared per-sample verdicts (``counts`` of :func:`judge_batch`)."""
    shape = tuple(ref.shape)
    if is_kept_output(name) and counts is not None:  # rows judged as sets; the padded length may differ
        ok = counts["mismatch"] == 0 if index_agreement > 0 else True
        exact = counts["exact"] / max(shape[0], 1)
        reason = "" if ok else (f"{counts['mismatch']} of {shape[0]} sample(s) keep other tokens than the reference "
                                f"beyond near-ties ({counts['near_tie']} near-tie(s) excused)")
        return OutputCheck(batch_size, name, tuple(got.shape), True, 0.0, 0.0, exact, ok, reason,
                           counts["near_tie"])
    if tuple(got.shape) != shape or counts is None:
        return OutputCheck(batch_size, name, tuple(got.shape), True, 0.0, 0.0, 0.0, False,
                           f"shape {tuple(got.shape)} differs from the reference {shape} (another token schedule)")
    agreement = float((got == ref).mean()) if ref.size else 1.0
    if index_agreement >= 1.0:
        ok = counts["mismatch"] == 0
        reason = "" if ok else (f"{counts['mismatch']} of {shape[0]} sample(s) take other tokens than the reference "
                                f"beyond near-ties ({counts['near_tie']} near-tie(s) excused)")
    else:
        ok = agreement >= index_agreement
        reason = "" if ok else f"{agreement:.2%} of the indices equal the reference (need {index_agreement:.0%})"
    return OutputCheck(batch_size, name, shape, True, 0.0, 0.0, agreement, ok, reason, counts["near_tie"])


def make_session(path: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",), threads: int | None = None):
    import onnxruntime as ort

    from ..backends import ort_session_options

    options = ort_session_options(threads)
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=list(providers))
    except Exception as exc:  # ORT raises its own exception types
        raise PumerExportError(f"ONNX Runtime cannot load {path}: {str(exc).strip().splitlines()[-1]}") from None


def validate_onnx(
    path: str | Path,
    model,
    *,
    dtype: str = "fp32",
    image_size: Sequence[int],
    text_length: int,
    reduction: bool = True,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    atol: float | None = None,
    rtol: float | None = None,
    index_agreement: float | None = None,
    seed: int = 0,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    show: bool = True,
    raise_on_failure: bool = True,
) -> ValidationReport:
    """Run ``path`` in ONNX Runtime at ``batch_sizes`` and compare it with ``model`` (float32 reference)."""
    from ..models import example_inputs, reduction_set

    defaults = TOLERANCES[dtype]
    atol = defaults["atol"] if atol is None else atol
    rtol = defaults["rtol"] if rtol is None else rtol
    index_agreement = defaults["index_agreement"] if index_agreement is None else index_agreement
    if len(batch_sizes) < 1 or min(batch_sizes) < 1:
        raise PumerExportError(f"batch sizes must be positive integers, got {list(batch_sizes)}")

    session = make_session(path, providers)
    input_types = {i.name: _ORT_TYPES.get(i.type) for i in session.get_inputs()}
    output_names = [o.name for o in session.get_outputs()]
    tie = DEFAULTS[dtype][2] if dtype in DEFAULTS else DEFAULTS["fp32"][2]
    checks: list[OutputCheck] = []
    model = model.eval()
    with reduction_set(model, reduction):
        for batch_size in batch_sizes:
            inputs = example_inputs(model.config, batch_size, text_length=text_length, image_size=image_size,
                                    seed=seed + batch_size)
            refs, details = reference_run(model, inputs)
            if sorted(refs) != sorted(output_names):
                raise ParityError(
                    f"the file's outputs {output_names} differ from the reference's {list(refs)}; "
                    "was it exported from this model with the same settings?"
                )
            feed = {name: value.numpy().astype(input_types.get(name) or value.numpy().dtype, copy=False)
                    for name, value in inputs.items()}
            got = dict(zip(output_names, session.run(output_names, feed)))
            index_names = [name for name in refs if is_index_output(name)]
            counts, states = judge_batch(index_names, refs, got, details, tie)
            gated = np.array([state != "near_tie" for state in states], dtype=bool)
            for name in output_names:
                if name in index_names:
                    checks.append(compare_indices(name, batch_size, got[name], refs[name], counts.get(name),
                                                  index_agreement=index_agreement))
                else:  # near-tie samples see other tokens after the tie by design: left out of the value check
                    checks.append(compare_values(name, batch_size, got[name][gated], refs[name][gated], atol=atol,
                                                 rtol=rtol))
    report = ValidationReport(Path(path), dtype, atol, rtol, index_agreement, checks)
    if show:
        from ..console import out_console

        out_console.print(report.table())
    if raise_on_failure:
        report.raise_for_failure()
    return report
