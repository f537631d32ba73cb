"""The comparison: Polygraphy's comparator for the tensors, then PuMer- and task-level checks.

1. ``Comparator.run`` feeds the same batches to every runner; ``Comparator.compare_accuracy``
   with ``SimpleCompareFunc(check_error_stat="max")`` compares each backend with the reference
   (per-output atol / rtol; index outputs with 0 / 0, i.e. exactly).
2. Per output: error statistics over all samples (max, mean, p50 / p90 / p99 of |diff|).
3. Per reduce layer and index output (``keep_idx``, ``image_slots``, ``text_slots``): token counts
   (the output widths against the token schedule) and the exact agreement rate per sample. A
   sample whose indices differ is a *near-tie* when every differing decision was a close call in
   the reference, judged with the reference's own float32 values and the tie tolerance ``tau``:

   * pruning (``keep_idx``, in score order): at every differing position the backend's token
     has a reference score within ``tau * max(score)`` of the reference's token;
   * merging (``*_slots``, the output position of each input token): every a-token merged by
     one side only has a best similarity within ``tau`` of the merge threshold, and every
     a-token sent to another b-token has a similarity to it within ``tau`` of the reference's
     choice.

   Later decisions of a sample that diverged are not judged (its tokens differ from then on);
   they are counted as ``after_divergence``. Near-ties are reported, not failed; any other
   difference fails the output.
4. Float outputs of near-tie samples are left out of the gate (their inputs to the later
   layers differ by design) but stay in the statistics.
5. Task level: VQA top-1 agreement and top-5 overlap with the reference (and between the
   backends). A top-1 flip fails unless the reference's top-1 / top-2 margin is within the
   logits tolerance or the sample is a near-tie.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Any, Sequence

import numpy as np

from .onnxinfo import is_index_output, is_kept_output
from .tolerances import Tolerances

QUANTILES = (0.5, 0.9, 0.99)


@dataclasses.dataclass
class Check:
    """One pass/fail item of the report (one JUnit test case)."""

    backend: str
    name: str
    passed: bool
    message: str
    kind: str  # "output", "indices", "counts", "task", "settings"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- near-ties
def _prune_near_tie(scores: np.ndarray, ref: np.ndarray, got: np.ndarray, tie: float) -> bool:
    if got.shape != ref.shape or got.min(initial=0) < 0 or got.max(initial=0) >= scores.shape[0]:
        return False
    if len(np.unique(got)) != len(got):
        return False
    scale = max(float(np.abs(scores).max()), 1e-30)
    diff = got != ref
    return bool(np.all(np.abs(scores[got[diff]] - scores[ref[diff]]) <= tie * scale))


def _decode_slots(slots: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(merged mask, destination b-index) of every a-token, or None if ``slots`` is not a valid plan."""
    tokens = slots.shape[0]
    num_a, num_b = (tokens + 1) // 2, tokens // 2
    kept = num_a - r
    if not np.array_equal(slots[1::2], kept + np.arange(num_b)):
        return None
    a_slots = slots[::2]
    merged = a_slots >= kept
    if merged.sum() != r or np.any(a_slots < 0) or np.any(a_slots >= kept + num_b):
        return None
    if not np.array_equal(a_slots[~merged], np.arange(kept)):  # unmerged a-tokens keep their order
        return None
    return merged, a_slots - kept


def _merge_near_tie(sim: np.ndarray, r: int, ref: np.ndarray, got: np.ndarray, tie: float) -> bool:
    if got.shape != ref.shape:
        return False
    ref_plan, got_plan = _decode_slots(ref, r), _decode_slots(got, r)
    if ref_plan is None or got_plan is None:
        return False
    (ref_merged, ref_dst), (got_merged, got_dst) = ref_plan, got_plan
    node_max = sim.max(axis=-1)
    order = np.sort(node_max)[::-1]
    lowest_merged = order[r - 1]
    highest_kept = order[r] if r < len(order) else -np.inf
    for a in np.flatnonzero(got_merged & ~ref_merged):
        if not node_max[a] >= lowest_merged - tie:
            return False
    for a in np.flatnonzero(ref_merged & ~got_merged):
        if not node_max[a] <= highest_kept + tie:
            return False
    for a in np.flatnonzero(ref_merged & got_merged & (ref_dst != got_dst)):
        if not sim[a, got_dst[a]] >= sim[a, ref_dst[a]] - tie:
            return False
    return True


def _trim_near_tie(margins: np.ndarray, tau: float, ref: np.ndarray, got: np.ndarray) -> bool:
    """SmartTrim's rule: the kept sets may differ only in tokens whose reference margin ``keep - drop`` was within
    :data:`pumer_export.methods.smarttrim.reference.NEAR_TIE_MARGIN` of tau (padding slots, -1, ignored)."""
    from ..methods.smarttrim.reference import NEAR_TIE_MARGIN

    differing = set(ref[ref >= 0].tolist()) ^ set(got[got >= 0].tolist())
    if any(not 0 <= p < len(margins) or np.isnan(margins[p]) for p in differing):
        return False  # a position that was not even alive before the decision
    return all(abs(margins[p] - tau) < NEAR_TIE_MARGIN for p in differing)


def judge_indices(key: str, detail: dict[str, Any] | None, ref: np.ndarray, got: np.ndarray, tie: float) -> str:
    """``exact``, ``near_tie`` or ``mismatch`` for one sample's index output ``key``."""
    if is_kept_output(key):  # SmartTrim: the row's kept positions (its padding slots, -1, are the batch's business)
        ref, got = ref[ref >= 0], got[got >= 0]
    if got.shape == ref.shape and np.array_equal(got, ref):
        return "exact"
    if detail is None:
        return "mismatch"
    if key.endswith("keep_idx"):
        return "near_tie" if _prune_near_tie(detail["scores"], ref, got, tie) else "mismatch"
    if "margins" in detail:
        return "near_tie" if _trim_near_tie(detail["margins"], detail["tau"], ref, got) else "mismatch"
    return "near_tie" if _merge_near_tie(detail["sim"], detail["r"], ref, got, tie) else "mismatch"


def _detail_row(details: dict[str, Any] | None, row: int) -> dict[str, Any] | None:
    if details is None:
        return None
    if "scores" in details:
        return {"scores": details["scores"][row]}
    if "margins" in details:
        return {"margins": details["margins"][row], "tau": details["tau"]}
    return {"sim": details["sim"][row], "r": details["r"]}


def judge_batch(index_names: Sequence[str], reference: dict[str, np.ndarray], backend: dict[str, np.ndarray],
                details: dict[str, dict[str, Any]] | None, tie: float) -> tuple[dict[str, dict[str, int]], list[str]]:
    """Judge the index outputs of one batch, sample by sample, in layer order (THE rule of every parity gate).

    Returns per output the counts ``exact`` / ``near_tie`` / ``mismatch`` / ``after_divergence`` (a sample
    that diverged at an earlier decision is not judged again: its tokens differ from then on by design), and
    per sample its state: ``exact``, or how it first diverged (``near_tie`` / ``mismatch``). Outputs whose
    shapes differ from the reference are the caller's business (token counts) and are skipped here.
    """
    batch = int(next(iter(reference.values())).shape[0]) if reference else 0
    states = ["exact"] * batch
    counts: dict[str, dict[str, int]] = {}
    for key in index_names:
        if key not in backend:
            continue
        ref_b, got_b = np.asarray(reference[key]), np.asarray(backend[key])
        if ref_b.shape != got_b.shape and not (is_kept_output(key) and ref_b.shape[0] == got_b.shape[0]):
            continue  # (a SmartTrim batch's padded length follows its rows: judged row by row)
        c = counts[key] = {"exact": 0, "near_tie": 0, "mismatch": 0, "after_divergence": 0}
        for row in range(ref_b.shape[0]):
            if states[row] != "exact":
                c["after_divergence"] += 1
                continue
            verdict = judge_indices(key, _detail_row((details or {}).get(key), row), ref_b[row], got_b[row], tie)
            c[verdict] += 1
            if verdict != "exact":
                states[row] = verdict
    return counts, states


# --------------------------------------------------------------------------- statistics
def error_stats(backend: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    absdiff = np.abs(backend.astype(np.float64) - reference.astype(np.float64))
    denom = np.abs(reference.astype(np.float64))
    reldiff = absdiff / np.where(denom == 0, np.finfo(np.float64).eps, denom)
    stats = {"max_abs": float(absdiff.max(initial=0)), "mean_abs": float(absdiff.mean()) if absdiff.size else 0.0,
             "max_rel": float(reldiff.max(initial=0)), "mean_rel": float(reldiff.mean()) if reldiff.size else 0.0}
    for q in QUANTILES:
        stats[f"p{int(q * 100)}_abs"] = float(np.quantile(absdiff, q)) if absdiff.size else 0.0
    return stats


def _within(backend: np.ndarray, reference: np.ndarray, atol: float, rtol: float) -> bool:
    """Polygraphy's "max" rule: max |diff| <= atol OR max relative diff <= rtol."""
    if backend.size == 0:
        return True
    stats = error_stats(backend, reference)
    return stats["max_abs"] <= atol or stats["max_rel"] <= rtol


def topk_agreement(a: np.ndarray, b: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: top-1 equal (bool) and top-k overlap fraction between logits ``a`` and ``b``."""
    k = min(k, a.shape[-1])
    top1 = a.argmax(-1) == b.argmax(-1)
    top_a = np.argsort(-a, axis=-1, kind="stable")[:, :k]
    top_b = np.argsort(-b, axis=-1, kind="stable")[:, :k]
    overlap = np.array([len(set(x) & set(y)) / k for x, y in zip(top_a, top_b)])
    return top1, overlap


# --------------------------------------------------------------------------- comparison
def _concat(iterations: Sequence[dict[str, np.ndarray]], name: str) -> np.ndarray | None:
    if not all(name in it for it in iterations):
        return None
    parts = [np.asarray(it[name]) for it in iterations]
    if len({p.shape[1:] for p in parts}) != 1:
        return None
    return np.concatenate(parts)


def run_and_compare(runners: Sequence, batches: Sequence[dict], tol: Tolerances, *, reference_details,
                    schedule=None, verbose: bool = False, gate=None) -> dict[str, Any]:
    """Run ``runners`` (the reference first) on ``batches`` and compare every backend with it.

    With ``gate`` (:class:`~pumer_export.parity.quantized.QuantGate`: a quantized export) the backends are judged
    by task metrics instead of float tolerances and exact decisions (:mod:`pumer_export.parity.quantized`).

    Returns a dict with ``checks`` (list of :class:`Check`), ``outputs`` (per backend and output:
    stats, tolerances, Polygraphy verdicts), ``indices`` (per backend and index output),
    ``task`` (top-1 / top-5) and ``timing``.
    """
    from polygraphy.comparator import Comparator, SimpleCompareFunc
    from polygraphy.logger import G_LOGGER

    severity = G_LOGGER.INFO if verbose else G_LOGGER.CRITICAL
    with G_LOGGER.verbosity(severity), np.errstate(divide="ignore", invalid="ignore"):
        results = Comparator.run(list(runners), data_loader=list(batches))
        ref_name = runners[0].name
        ref_iters = results[ref_name]
        output_names = list(ref_iters[0].keys())
        atol, rtol = tol.polygraphy_dicts(output_names)
        compare = SimpleCompareFunc(atol=atol, rtol=rtol, check_error_stat="max")
        pairs = [(index, 0) for index in range(1, len(runners))]
        accuracy = Comparator.compare_accuracy(results, comparisons=pairs, compare_func=compare)[0] if pairs else {}

    sizes = [int(np.asarray(it["logits"]).shape[0]) for it in ref_iters]
    offsets = np.cumsum([0] + sizes)
    num_samples = int(offsets[-1])
    checks: list[Check] = []
    report: dict[str, Any] = {"reference": ref_name, "backends": {}, "num_samples": num_samples}
    ref_logits = _concat(ref_iters, "logits")
    index_names = [name for name in output_names if is_index_output(name)]
    float_names = [name for name in output_names if not is_index_output(name)]
    backend_logits: dict[str, np.ndarray] = {}

    for runner in runners[1:]:
        name = runner.name
        iters = results[name]
        verdicts = accuracy[(name, ref_name)] if (name, ref_name) in accuracy else []
        entry: dict[str, Any] = {"outputs": OrderedDict(), "indices": OrderedDict(), "task": {},
                                 "timing_ms": _timing(iters)}
        report["backends"][name] = entry
        missing = [o for o in output_names if o not in iters[0]]
        extra = [o for o in iters[0] if o not in output_names]
        for out in missing:
            checks.append(Check(name, out, False, f"output {out} is missing from {name} (the export has other reduce "
                                f"layers than the checkpoint?); {name} outputs: {', '.join(iters[0])}", "output"))
        if extra:
            checks.append(Check(name, "outputs", False, f"{name} has outputs the reference does not: {', '.join(extra)} "
                                "(the export has other PuMer settings than the checkpoint?)", "output"))
        if gate is not None:
            from .quantized import quantized_checks

            ref_all = {o: _concat(ref_iters, o) for o in output_names}
            got_all = {o: _concat(iters, o) for o in output_names if o not in missing}
            got_all = {o: v for o, v in got_all.items() if v is not None}
            gate_checks, gate_entry = quantized_checks(name, ref_all, got_all,
                                                       [o for o in index_names if o in got_all], gate)
            checks += gate_checks
            entry.update(gate_entry)
            if "logits" in got_all and got_all["logits"].shape == ref_all["logits"].shape:
                backend_logits[name] = got_all["logits"]
            continue

        # ---- index outputs: per sample, in layer order, with divergence tracking (judge_batch)
        state: list[str] = []  # per sample: exact / near_tie / mismatch (first divergence)
        key_counts = {key: {"exact": 0, "near_tie": 0, "mismatch": 0, "after_divergence": 0} for key in index_names}
        for it_index, (ref_it, got_it) in enumerate(zip(ref_iters, iters)):
            details = reference_details[it_index] if reference_details else None
            batch_counts, batch_states = judge_batch(index_names, dict(ref_it), dict(got_it), details, tol.tie)
            state += batch_states
            for key, c in batch_counts.items():
                for kind, n in c.items():
                    key_counts[key][kind] += n
        for key in index_names:
            if key in missing:
                continue
            ref_all = [np.asarray(it[key]) for it in ref_iters]
            got_all = [np.asarray(it[key]) for it in iters]
            counts = key_counts[key]
            shape_ok = all(r.shape == g.shape for r, g in zip(ref_all, got_all))
            equal_elems = sum(int((r == g).sum()) for r, g in zip(ref_all, got_all)) if shape_ok else 0
            total_elems = sum(r.size for r in ref_all) if shape_ok else 0
            width_ref = ref_all[0].shape[1] if ref_all[0].ndim == 2 else None
            width_got = got_all[0].shape[1] if got_all[0].ndim == 2 else None
            polygraphy_passed = all(bool(v.get(key, False)) for v in verdicts) if verdicts else None
            entry["indices"][key] = {
                "tokens_reference": width_ref, "tokens_backend": width_got,
                "exact_rate": counts["exact"] / num_samples if num_samples else 1.0,
                "element_agreement": (equal_elems / total_elems) if total_elems else None,
                **counts, "polygraphy_exact_match": polygraphy_passed,
            }
            if not shape_ok:
                checks.append(Check(name, key, False, f"{key}: {name} has {width_got} tokens, the reference "
                                    f"{width_ref} (the export has another token schedule)", "counts"))
                continue
            passed = counts["mismatch"] == 0
            msg = (f"{key}: exact in {counts['exact']}/{num_samples} samples, near-ties {counts['near_tie']}, "
                   f"mismatches {counts['mismatch']}, after divergence {counts['after_divergence']}")
            checks.append(Check(name, key, passed, msg, "indices"))

        near_tie_samples = [s for s, v in enumerate(state) if v == "near_tie"]
        entry["near_tie_samples"] = near_tie_samples
        gated = np.array([v != "near_tie" for v in state], dtype=bool)

        # ---- float outputs: Polygraphy's verdict, near-tie samples left out of the gate
        for out in float_names:
            if out in missing:
                continue
            ref_arr, got_arr = _concat(ref_iters, out), _concat(iters, out)
            o_atol, o_rtol = tol.for_output(out)
            if ref_arr is None or got_arr is None or ref_arr.shape != got_arr.shape:
                shape_got = None if got_arr is None else list(got_arr.shape)
                entry["outputs"][out] = {"shape_reference": list(ref_arr.shape) if ref_arr is not None else None,
                                         "shape_backend": shape_got, "atol": o_atol, "rtol": o_rtol}
                checks.append(Check(name, out, False, f"{out}: shape {shape_got} differs from the reference's "
                                    f"{list(ref_arr.shape) if ref_arr is not None else None}", "output"))
                continue
            poly = [bool(v.get(out, False)) for v in verdicts]
            passed = all(poly)
            if not passed and near_tie_samples:
                passed = _within(got_arr[gated], ref_arr[gated], o_atol, o_rtol)
            stats = error_stats(got_arr, ref_arr)
            gated_stats = error_stats(got_arr[gated], ref_arr[gated]) if gated.any() else None
            entry["outputs"][out] = {
                "shape": list(got_arr.shape), "dtype_backend": str(got_arr.dtype), "dtype_reference": str(ref_arr.dtype),
                "atol": o_atol, "rtol": o_rtol, "stats": stats, "stats_without_near_ties": gated_stats,
                "polygraphy_passed_per_iteration": poly, "passed": passed,
            }
            # Every statistic of the line over the same samples: those the gate judges.
            shown = gated_stats or stats
            left_out = int((~gated).sum())
            over = f" over {int(gated.sum())} of {num_samples} samples (near-ties left out)" if left_out and gated_stats \
                else f" over {num_samples} samples"
            checks.append(Check(name, out, passed,
                                f"{out}: max |diff| {shown['max_abs']:.3g} (atol {o_atol:g}), max rel "
                                f"{shown['max_rel']:.3g} (rtol {o_rtol:g}), mean |diff| {shown['mean_abs']:.3g}{over}",
                                "output"))
            if out == "logits":
                backend_logits[name] = got_arr

        # ---- task level
        if ref_logits is not None and name in backend_logits:
            got = backend_logits[name].astype(np.float64)
            top1, overlap = topk_agreement(got, ref_logits.astype(np.float64))
            ordered = np.sort(ref_logits, axis=-1)
            margin = ordered[:, -1] - ordered[:, -2] if ref_logits.shape[-1] > 1 else np.full(num_samples, np.inf)
            close = margin <= tol.for_output("logits")[0]
            flips = ~top1
            excused = flips & (close | ~gated)
            failed = flips & ~excused
            entry["task"] = {"top1_agreement": float(top1.mean()), "top5_overlap": float(overlap.mean()),
                             "top1_flips": int(flips.sum()), "top1_flips_near_tie": int(excused.sum()),
                             "top1_flips_failed": int(failed.sum())}
            checks.append(Check(name, "top1", not failed.any(),
                                f"VQA top-1 agreement {top1.mean():.1%} ({int(flips.sum())} flips, {int(excused.sum())} at "
                                f"near-ties), top-5 overlap {overlap.mean():.1%}", "task"))

    # ---- between backends (information)
    names = list(backend_logits)
    report["between_backends"] = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            top1, overlap = topk_agreement(backend_logits[names[i]], backend_logits[names[j]])
            report["between_backends"].append({"a": names[i], "b": names[j], "top1_agreement": float(top1.mean()),
                                               "top5_overlap": float(overlap.mean())})
    report["reference_timing_ms"] = _timing(ref_iters)
    if schedule is not None:
        report["token_schedule"] = schedule.to_dict()
    report["checks"] = checks
    return report


def _timing(iterations) -> dict[str, float] | None:
    times = [it.runtime for it in iterations if getattr(it, "runtime", None) is not None]
    if not times:
        return None
    return {"mean": float(np.mean(times) * 1e3), "min": float(np.min(times) * 1e3)}
