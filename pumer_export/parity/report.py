"""Report files of ``pumer-export validate``: ``report.json``, ``report.md`` and ``junit.xml`` (atomic writes)."""

from __future__ import annotations

import dataclasses
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

from ..fsutil import write_text_atomic

JSON_FILE = "report.json"
MARKDOWN_FILE = "report.md"
JUNIT_FILE = "junit.xml"


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return value.to_dict() if hasattr(value, "to_dict") else dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    return value


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(_jsonable(report), indent=2, sort_keys=False) + "\n"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _pct(value: Any) -> str:
    return "-" if value is None else f"{value:.1%}"


def _tolerances(values: Any) -> str:
    """``{"": 1e-4, "logits": 5e-4}`` as ``1e-04 (logits 5e-04)``: the default first, then per-output overrides."""
    if not isinstance(values, dict):
        return _fmt(values)
    default = [f"{v:g}" for k, v in values.items() if not k]
    named = [f"{k} {v:g}" for k, v in values.items() if k]
    if not named:
        return ", ".join(default) or "-"
    return f"{', '.join(default) or 'default'} ({', '.join(named)})"


def to_markdown(report: dict[str, Any]) -> str:
    checks = report["checks"]
    failed = [c for c in checks if not c.passed]
    lines = [f"# pumer-export validate: {'PASSED' if report['passed'] else 'FAILED'}", ""]
    lines += [f"- model: `{report['model']}`", f"- reference: PyTorch ({report['reference']['device']}, "
              f"{report['reference']['dtype']})"]
    for name, backend in report["backends_used"].items():
        lines.append(f"- {name}: {backend}")
    inputs = report["inputs"]
    lines += [f"- inputs: {inputs['source']}, {inputs['num_samples']} samples in batches of "
              f"{inputs['batch_sizes']}", f"- text length {report['settings']['text_length']}, image "
              f"{'x'.join(map(str, report['settings']['image_size']))}, export dtype {report['settings']['dtype']}",
              f"- checks: {len(checks) - len(failed)}/{len(checks)} passed", ""]
    if failed:
        lines += ["## Failures", ""] + [f"- **{c.backend} / {c.name}**: {c.message}" for c in failed] + [""]
    for backend, entry in report["comparison"]["backends"].items():
        if "gate" in entry:
            lines += _quantized_section(backend, entry, report.get("quantization") or {})
            continue
        lines += [f"## {backend} vs PyTorch", "", "### Outputs", "",
                  "| output | max abs | mean abs | p50 abs | p90 abs | p99 abs | max rel | atol | rtol | pass |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for out, data in entry["outputs"].items():
            # the samples the gate judges, as on the check line (report.json keeps the all-sample stats too)
            stats = data.get("stats_without_near_ties") or data.get("stats") or {}
            lines.append(f"| {out} | {_fmt(stats.get('max_abs'))} | {_fmt(stats.get('mean_abs'))} | "
                         f"{_fmt(stats.get('p50_abs'))} | {_fmt(stats.get('p90_abs'))} | {_fmt(stats.get('p99_abs'))} | "
                         f"{_fmt(stats.get('max_rel'))} | {data['atol']:g} | {data['rtol']:g} | "
                         f"{'yes' if data.get('passed') else 'NO'} |")
        if entry.get("near_tie_samples"):
            lines += ["", f"Statistics over the samples the gate judges: near-tie samples "
                          f"{entry['near_tie_samples']} are left out (their later layers see other tokens by design)."]
        if entry["indices"]:  # a baseline export has none
            lines += ["", "### Reduction indices", "",
                      "| output | tokens (ref / backend) | exact rate | element agreement | near-ties | mismatches "
                      "| after divergence |", "|---|---|---|---|---|---|---|"]
        for out, data in entry["indices"].items():
            lines.append(f"| {out} | {data['tokens_reference']} / {data['tokens_backend']} | {data['exact_rate']:.1%} | "
                         f"{_pct(data['element_agreement'])} | {data['near_tie']} | {data['mismatch']} | "
                         f"{data['after_divergence']} |")
        task = entry.get("task") or {}
        if task:
            lines += ["", f"Task: top-1 agreement {task['top1_agreement']:.1%} ({task['top1_flips']} flips, "
                      f"{task['top1_flips_near_tie']} at near-ties), top-5 overlap {task['top5_overlap']:.1%}."]
        lines.append("")
    for pair in report["comparison"].get("between_backends", []):
        lines.append(f"- {pair['a']} vs {pair['b']}: top-1 agreement {pair['top1_agreement']:.1%}, "
                     f"top-5 overlap {pair['top5_overlap']:.1%}")
    schedule = report.get("token_schedule") or {}
    if schedule.get("layers"):
        lines += ["", "## Token schedule", "", "| layer | text in → out | image in → kept → out |", "|---|---|---|"]
        for layer in schedule["layers"]:
            lines.append(f"| {layer['layer']} | {layer['text_in']} → {layer['text_out']} | "
                         f"{layer['image_in']} → {layer['keep']} → {layer['image_out']} |")
    tol = report["tolerances"]
    env = report["environment"]
    tolerance_line = (f"- tolerances: atol {_tolerances(tol['atol'])}, rtol {_tolerances(tol['rtol'])}, index outputs "
                      f"exact, near-tie tolerance {tol['tie_tolerance']}") if "quantized" not in tol else (
        "- tolerances (quantized export): " + ", ".join(f"{k} {v}" for k, v in tol["quantized"].items()))
    lines += ["", "## Settings", "", tolerance_line,
              "- versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v),
              f"- platform: {env['platform']}, {env['cpu']}", ""]
    return "\n".join(lines)


def _quantized_section(backend: str, entry: dict[str, Any], quantization: dict[str, Any]) -> list[str]:
    """A quantized export's section: task metrics and, per reduce layer, how many decisions moved."""
    gate, task = entry["gate"], entry.get("task") or {}
    lines = [f"## {backend} ({gate['label']}) vs PyTorch float32", "",
             f"Quantized export ({quantization.get('target')}, {quantization.get('mode')}): judged by task metrics, "
             "not float tolerances.", ""]
    if task:
        lines += [f"- top-1 agreement {task['top1_agreement']:.1%} (at least {gate['top1']:.0%}; "
                  f"{task['top1_flips']} flips), top-5 overlap {task['top5_overlap']:.1%}",
                  f"- answer scores: max |diff| {task['score_max_abs']:.3f} (at most {gate['score_max']:g}), mean "
                  f"{task['score_mean_abs']:.4f} (at most {gate['score_mean']:g})"]
    if entry["indices"]:
        lines += ["", "Token agreement: pruning, the reference's kept tokens kept too (gated); merging, source tokens "
                      "merged or kept alike and into the same token (reported: positions shift after a moved prune).",
                  "", "| reduce output | tokens (ref / backend) | token agreement | gated | samples whose decisions "
                  "moved |", "|---|---|---|---|---|"]
        for out, data in entry["indices"].items():
            moved = data["samples_moved"]
            shown = ", ".join(map(str, moved[:12])) + (" ..." if len(moved) > 12 else "")
            lines.append(f"| {out} | {data['tokens_reference']} / {data['tokens_backend']} | "
                         f"{data['token_agreement']:.1%} | {'yes' if data['gated'] else 'no'} | "
                         f"{len(moved)}: {shown or '-'} |")
    return lines + [""]


def to_junit(report: dict[str, Any]) -> str:
    checks = report["checks"]
    root = ET.Element("testsuites", name="pumer-export validate", tests=str(len(checks)),
                      failures=str(sum(not c.passed for c in checks)))
    for backend in dict.fromkeys(c.backend for c in checks):
        mine = [c for c in checks if c.backend == backend]
        suite = ET.SubElement(root, "testsuite", name=f"parity.{backend}", tests=str(len(mine)),
                              failures=str(sum(not c.passed for c in mine)), errors="0", skipped="0")
        for check in mine:
            case = ET.SubElement(suite, "testcase", classname=f"parity.{backend}.{check.kind}", name=check.name)
            if check.passed:
                ET.SubElement(case, "system-out").text = check.message
            else:
                failure = ET.SubElement(case, "failure", message=check.message, type=check.kind)
                failure.text = check.message
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_reports(report: dict[str, Any], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / JSON_FILE, directory / MARKDOWN_FILE, directory / JUNIT_FILE]
    write_text_atomic(paths[0], to_json(report))
    write_text_atomic(paths[1], to_markdown(report))
    write_text_atomic(paths[2], to_junit(report))
    return paths
