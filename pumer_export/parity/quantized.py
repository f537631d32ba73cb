"""The parity gate of a quantized export: task metrics against the float reference, not float tolerances.

An int8 (or fp8) export cannot match the float32 reference within float tolerances, nor take every token decision
the same way: quantization moves scores by more than any near-tie margin. What a deployer needs to know is whether
the answers, their scores and the reduction still agree. Per backend:

* ``top1``: VQA top-1 agreement with the reference, at least ``top1``;
* ``scores``: the answer scores (sigmoid of the logits, what the runtime returns) within ``score_max`` of the
  reference's at every sample and answer, and within ``score_mean`` on average;
* per reduce layer, the *decision agreement* of the pruning (``keep_idx``): the share of the reference's kept
  tokens the backend kept too (order free), averaged over the samples; at least ``decisions``, and the samples
  whose kept set moved are listed.
* the merges (``*_slots``) are reported, not gated: per layer the share of source tokens merged or kept alike
  (and into the same token) and the samples that moved. Their positions are relative to the tokens the layer's
  pruning kept, so one moved prune decision shifts every merge decision after it, and on images with uniform
  regions the pairs among near-identical patches are arbitrary; what a moved merge costs shows in the scores and
  the top-1 agreement.

The tolerances per quantization (:data:`GATES`) come from the shipped easy-VQA models' exports on easy-VQA test
questions and random inputs, with room for other checkpoints; ``--atol`` / ``--rtol`` do not apply.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from .compare import Check, _decode_slots, topk_agreement


@dataclasses.dataclass(frozen=True)
class QuantGate:
    label: str
    top1: float        # minimum top-1 agreement
    score_max: float   # maximum |score difference| (scores in [0, 1])
    score_mean: float  # maximum mean |score difference|
    decisions: float   # minimum kept-token agreement per reduce layer

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: Tolerances per quantization label (pumer_export.quantize.label).
_CALIBRATED = QuantGate("int8-static", top1=0.85, score_max=0.35, score_mean=0.03, decisions=0.75)
GATES = {
    "int8": QuantGate("int8", top1=0.9, score_max=0.25, score_mean=0.02, decisions=0.8),
    # activations quantized with calibrated ranges: one set of tolerances (ONNX Runtime QDQ, TensorRT int8 / fp8)
    **{label: dataclasses.replace(_CALIBRATED, label=label) for label in ("int8-static", "int8-qdq", "fp8-qdq")},
}


def describe_gates() -> str:
    """One line per quantization label (the help text of ``validate``)."""
    return "\n".join(f"  {g.label}: top-1 >= {g.top1:.0%}, scores max {g.score_max:g} / mean {g.score_mean:g}, kept "
                     f"tokens >= {g.decisions:.0%}" for g in GATES.values())


def gate_for(label: str) -> QuantGate:
    return GATES.get(label, GATES["int8-static"])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def token_agreement(key: str, ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    """Per sample: the share of the reference's token decisions the backend took too (kept set for ``keep_idx``,
    merged-or-kept and destination per source token for ``*_slots``)."""
    if ref.shape != got.shape:
        return np.zeros(ref.shape[0])
    if key.endswith("keep_idx"):
        width = max(ref.shape[1], 1)
        return np.array([len(set(r.tolist()) & set(g.tolist())) / width for r, g in zip(ref, got)])
    return np.array([_merge_agreement(r, g) for r, g in zip(ref, got)])


def _merge_agreement(ref: np.ndarray, got: np.ndarray) -> float:
    """The share of the a-tokens (the even positions, ToMe's sources) merged or kept alike, and when merged, into
    the same b-token. (Slot positions themselves shift for every later token when one decision changes.)"""
    if ref.shape[0] < 2:
        return float(np.array_equal(ref, got))
    r = (ref.shape[0] + 1) // 2 - int(ref[1])  # the first b-token's slot is the count of kept a-tokens
    plans = _decode_slots(ref, r), _decode_slots(got, r)
    if plans[0] is None or plans[1] is None:
        return float((ref == got).mean())
    (ref_merged, ref_dst), (got_merged, got_dst) = plans
    same = (ref_merged == got_merged) & (~ref_merged | (ref_dst == got_dst))
    return float(same.mean())


def quantized_checks(name: str, ref: dict[str, np.ndarray], got: dict[str, np.ndarray], index_names: Sequence[str],
                     gate: QuantGate) -> tuple[list[Check], dict[str, Any]]:
    """The checks of one backend (``ref`` / ``got``: every output over all samples) and its report entry."""
    checks: list[Check] = []
    entry: dict[str, Any] = {"gate": gate.to_dict(), "indices": {}, "task": {}}
    for key in index_names:
        if key not in got:
            continue
        tokens = token_agreement(key, ref[key], got[key])
        moved = [int(i) for i in np.flatnonzero(tokens < 1.0)]
        gated = key.endswith("keep_idx")
        entry["indices"][key] = {"token_agreement": float(tokens.mean()) if tokens.size else 1.0,
                                 "gated": gated, "samples_moved": moved, "tokens_reference": int(ref[key].shape[1]),
                                 "tokens_backend": int(got[key].shape[1])}
        if ref[key].shape != got[key].shape:
            checks.append(Check(name, key, False, f"{key}: {name} has {got[key].shape[1]} tokens, the reference "
                                f"{ref[key].shape[1]} (the export has another token schedule)", "counts"))
        elif gated:
            agreement = entry["indices"][key]["token_agreement"]
            checks.append(Check(name, key, agreement >= gate.decisions,
                                f"{key}: kept-token agreement {agreement:.1%} (at least {gate.decisions:.0%}); the "
                                f"kept set moved in {len(moved)} of {len(tokens)} samples", "indices"))
    if "logits" in got and got["logits"].shape == ref["logits"].shape:
        diff = np.abs(_sigmoid(got["logits"]) - _sigmoid(ref["logits"]))
        top1, overlap = topk_agreement(got["logits"].astype(np.float64), ref["logits"].astype(np.float64))
        entry["task"] = {"top1_agreement": float(top1.mean()), "top5_overlap": float(overlap.mean()),
                         "top1_flips": int((~top1).sum()), "score_max_abs": float(diff.max(initial=0)),
                         "score_mean_abs": float(diff.mean()) if diff.size else 0.0}
        t = entry["task"]
        checks.append(Check(name, "scores", t["score_max_abs"] <= gate.score_max and t["score_mean_abs"] <= gate.score_mean,
                            f"answer scores: max |diff| {t['score_max_abs']:.3f} (at most {gate.score_max:g}), mean "
                            f"{t['score_mean_abs']:.4f} (at most {gate.score_mean:g})", "output"))
        checks.append(Check(name, "top1", t["top1_agreement"] >= gate.top1,
                            f"VQA top-1 agreement {t['top1_agreement']:.1%} (at least {gate.top1:.0%}; "
                            f"{t['top1_flips']} flips), top-5 overlap {t['top5_overlap']:.1%}", "task"))
    else:
        shape = None if "logits" not in got else list(got["logits"].shape)
        checks.append(Check(name, "logits", False, f"logits: shape {shape} differs from the reference's "
                            f"{list(ref['logits'].shape)}", "output"))
    return checks, entry
