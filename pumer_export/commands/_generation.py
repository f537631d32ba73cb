"""The LLaVA (generation) branch of the commands that take both kinds of checkpoint: each command's ``run`` hands a
LLaVA checkpoint here (:func:`pumer_export.commands._common.is_generation_checkpoint`); the work itself is
:mod:`pumer_export.generation`'s. Options of the classification path that mean nothing for a LLaVA are refused in
one line (:func:`refuse`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Iterable

from ..errors import PumerExportError


def refuse(args: argparse.Namespace, flags: Iterable[str], command: str) -> None:
    """One line for the first of ``flags`` set away from its default (None, False, empty)."""
    for flag in flags:
        value = getattr(args, flag, None)
        if value not in (None, False, "", ()):
            raise PumerExportError(f"{command} --{flag.replace('_', '-')} is for ViLT and METER checkpoints; "
                                   f"{getattr(args, 'model', 'the checkpoint')} is a LLaVA one")


def load(path: str | Path):
    """(model, processor) of a LLaVA checkpoint, checked against each other."""
    from ..console import step
    from ..models.llava import checkpoint

    with step(f"loading {path}"):
        model, processor = checkpoint.load(path), checkpoint.load_processor(path)
        checkpoint.check_processor(model, processor, path)
    return model, processor


#: Whose semantics each LLaVA method's reference follows.
PROVENANCE = {"stock": "transformers' LLaVA", "victor": "this project's design (the paper; no official code)",
              "fastv": "FastV's public reference code, with this project's fixed count and tie rule"}


def method_title(model) -> str:
    return {"": "stock LLaVA (nothing dropped)", "victor": "Victor", "fastv": "FastV"}[model.METHOD]


# ----------------------------------------------------------------------------------------------------- info
def info_data(model, processor) -> dict[str, Any]:
    """Everything ``info`` shows for a LLaVA checkpoint (JSON-ready)."""
    from ..generation import data
    from ..generation.bench import costs
    from ..models import llava

    config = model.config
    n = llava.image_tokens(config)
    question = "what color is the shape?"
    registers = getattr(model, "registers", 0)
    stock_ids = processor.tokenizer(data.prompts_text(processor, [question], 0, n))["input_ids"][0]
    ids = processor.tokenizer(data.prompts_text(processor, [question], registers, n))["input_ids"][0]
    start = ids.index(config.image_token_id)
    layout = {"prefix": start, "image": n, "registers": registers, "text": len(ids) - start - n - registers,
              "length": len(ids)}
    return {"family": "llava", "method": {"name": model.METHOD or "stock", "title": method_title(model),
                                          "settings": model.method_settings()},
            "architecture": llava.architecture(config), "example_prompt": question, "layout": layout,
            "drop_layer": model.drop_layer, "dropped_tokens": model.dropped_tokens,
            "costs": costs(model, len(stock_ids), len(ids), 16)}


def info(args: argparse.Namespace) -> int:
    from ..console import out_console, table

    refuse(args, ("image_size", "text_length"), "info")
    model, processor = load(args.model)
    data = info_data(model, processor)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    method, layout, cost = data["method"], data["layout"], data["costs"]
    out_console.print(f"method: {method['title']}; semantics: {PROVENANCE[method['name']]}")
    out_console.print(table("Architecture", ("field", "value"), list(data["architecture"].items())))
    if method["settings"]:
        out_console.print(table(method["title"], ("setting", "value"),
                                [(k, v) for k, v in method["settings"].items() if k != "format_version"]))
    layers = model.config.text_config.num_hidden_layers
    k, dropped = data["drop_layer"], data["dropped_tokens"]
    out_console.print(table(f"Prompt layout (\"{data['example_prompt']}\")", ("part", "positions"), [
        ("prefix", layout["prefix"]), ("image (N)", layout["image"]), ("registers (M)", layout["registers"]),
        ("question and answer turn", layout["text"]), ("total (L)", layout["length"])]
        + ([("decoder layers on L", _span(0, k)), (f"decoder layers on L - {dropped}", _span(k, layers))] if dropped else
           [("decoder layers on L", f"all {layers}")])))
    kv = cost["kv_bytes_per_layer"]
    out_console.print(
        f"prefill GFLOPs (decoder): stock {cost['prefill_gflops']['stock']:.4f}, this model "
        f"{cost['prefill_gflops']['method']:.4f}: FLOP-ideal prefill speedup {cost['prefill_flop_ideal']:.2f}x, "
        f"decode {cost['decode_flop_ideal']:.2f}x")
    out_console.print(f"KV cache after 16 new tokens: stock {sum(kv['stock']) / 1024:.1f} KiB, this model "
                      f"{sum(kv['method']) / 1024:.1f} KiB ({cost['kv_bytes_ratio']:.2f}x); per layer "
                      + ", ".join(f"{b / 1024:.1f}" for b in kv["method"]) + " KiB")
    return 0


def _span(first: int, end: int) -> str:
    """Layers ``first .. end - 1`` as text."""
    return "none" if end <= first else str(first) if end == first + 1 else f"{first}..{end - 1}"


# ----------------------------------------------------------------------------------------------------- apply
def apply(args: argparse.Namespace) -> int:
    from ..console import info as say
    from ..console import step
    from ..errors import ConfigError
    from ..models.llava import checkpoint

    refuse(args, ("layers", "masking"), "apply")
    try:
        if args.method == "victor":
            from ..methods.victor.config import VictorConfig

            settings = VictorConfig(**{k: v for k, v in (("registers", args.registers),
                                                         ("drop_layer", args.drop_layer)) if v is not None})
            if args.keep_tokens is not None:
                raise PumerExportError("--keep-tokens is FastV's setting; Victor keeps no visual tokens")
        elif args.method == "fastv":
            from ..methods.fastv.config import FastVConfig

            if args.keep_tokens is None:
                raise PumerExportError("--method fastv needs --keep-tokens R (how many visual tokens stay)")
            if args.registers is not None:
                raise PumerExportError("--registers is Victor's setting; FastV has none")
            settings = FastVConfig(**{k: v for k, v in (("keep_tokens", args.keep_tokens),
                                                        ("drop_layer", args.drop_layer)) if v is not None})
        else:
            raise PumerExportError(f"{args.src} is a LLaVA checkpoint: apply --method victor or --method fastv")
    except ConfigError as exc:
        raise PumerExportError(str(exc)) from None
    with step(f"applying {args.method} to {args.src}"):
        model = checkpoint.apply(args.src, args.dst, args.method, settings, force=args.force, seed=args.seed)
    trained = " (untrained registers: train them with `pumer-export finetune DST OUT --method victor`)" \
        if args.method == "victor" else " (training-free)"
    settings = ", ".join(f"{k} {v}" for k, v in model.method_settings().items() if k != "format_version")
    say(f"wrote {args.dst}: {method_title(model)} ({settings}){trained}")
    return 0


# ----------------------------------------------------------------------------------------------------- onnx
def onnx(args: argparse.Namespace) -> int:
    from ..console import info as say
    from ..console import step
    from ..fsutil import check_destination
    from ..onnx.generation import export_generation

    refuse(args, ("image_size", "text_length", "no_reduction", "atol", "rtol", "index_agreement", "external_data",
                  "fused_official_attention"), "onnx")
    if args.dtype != "fp32":
        raise PumerExportError("LLaVA exports are fp32 so far (--dtype fp32)")
    check_destination(Path(args.outdir), args.force)
    model, processor = load(args.model)
    with step(f"exporting {method_title(model)} as vision, prefill and decode graphs (opset {args.opset})"):
        export_generation(model, args.outdir, opset=args.opset, force=args.force, processor=processor)
    if not args.skip_validation:
        from ..generation.validate import validate

        with step("checking the graphs against the PyTorch reference in ONNX Runtime"):
            report = validate(model, processor, args.outdir, num_samples=2, batch_size=2, steps=4)
        if not report["passed"]:
            failed = next(c for c in report["checks"] if not c.passed)
            raise PumerExportError(f"the export does not match the reference: {failed.name}: {failed.message} "
                                   f"(the folder is written: {args.outdir}; run validate for every check)")
    say(f"wrote {args.outdir}: vision.onnx, prefill.onnx, decode.onnx, generation.json and the processor files"
        + ("" if args.skip_validation else " (checked against the reference)"))
    return 0


# ----------------------------------------------------------------------------------------------------- validate
def validate(args: argparse.Namespace) -> int:
    from ..console import info as say
    from ..console import step
    from ..fsutil import write_text_atomic
    from ..generation.validate import validate as run_validate
    from ._common import questions_from_args
    from .validate import print_checks

    refuse(args, ("engine", "inputs", "tie_tolerance", "baseline", "text_length", "image_size", "dtype"),
           "validate")
    if not args.onnx:
        raise PumerExportError("pass the export folder to check: --onnx DIR (made by `pumer-export onnx CKPT DIR`)")
    if args.ort_provider != "cpu":
        raise PumerExportError("LLaVA exports are validated on ONNX Runtime's CPU provider so far")
    atol, rtol = _tolerance(args.atol, 1e-4, "--atol"), _tolerance(args.rtol, 1e-3, "--rtol")
    model, processor = load(args.model)
    export = Path(args.onnx)
    if export.is_file():
        export = export.parent
    with step(f"validating {export} against the PyTorch reference {args.model}"):
        report = run_validate(model, processor, export, questions=questions_from_args(args, required=False),
                              num_samples=args.num_samples, batch_size=args.batch_size, seed=args.seed,
                              steps=args.steps, atol=atol, rtol=rtol)
    if args.report:
        folder = Path(args.report)
        folder.mkdir(parents=True, exist_ok=True)
        payload = {"passed": report["passed"], "method": report["method"], "steps": report["steps"],
                   "checks": [vars(c) for c in report["checks"]]}
        write_text_atomic(folder / "report.json", json.dumps(payload, indent=2) + "\n")
        say(f"wrote {folder / 'report.json'}")
    return print_checks(report["checks"])


def _tolerance(values, default: float, flag: str) -> float:
    """A single number for LLaVA validation (per-output tolerances are the classification exports')."""
    if not values:
        return default
    if len(values) > 1 or ":" in values[0]:
        raise PumerExportError(f"{flag} takes one number for a LLaVA export (its checks are not per output)")
    try:
        return float(values[0])
    except ValueError:
        raise PumerExportError(f"{flag} must be a number, got {values[0]!r}") from None


# ----------------------------------------------------------------------------------------------------- run
def run(args: argparse.Namespace, pairs: list[tuple[str, str]]) -> int:
    from ..console import out_console, table
    from ..datasets import Question
    from ..generation import answers as generated

    refuse(args, ("plugins",), "run")
    if args.provider != "cpu":
        raise PumerExportError("LLaVA exports run on ONNX Runtime's CPU provider so far")
    source = Path(args.source)
    if args.backend in ("ort", "trt"):
        if not (source / "generation.json").is_file():
            raise PumerExportError(f"{source} is a checkpoint: pass --backend torch, or export it first "
                                   "(pumer-export onnx CKPT DIR; for trt then pumer-export build DIR ENGINES) and "
                                   "run the folder")
    model, processor = load(source) if args.backend == "torch" else _export_processor(source)
    questions = [Question(i, Path(image), question, []) for i, (image, question) in enumerate(pairs)]
    from ..generation import data

    prompts = data.encode(model, processor, questions)
    backend = generated.backend_for(args.backend, model, source, args.threads)
    answers, _, _ = generated.generate_answers(backend, processor, prompts, args.batch_size or 8,
                                               args.max_new_tokens)
    rows = [{"image": str(q.image), "question": q.question, "answer": a} for q, a in zip(questions, answers)]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        out_console.print(table("answers", ("image", "question", "answer"),
                                [(r["image"], r["question"], r["answer"]) for r in rows]))
    return 0


def _export_processor(folder: Path):
    """(the prompt layout of an export folder, its processor)."""
    from ..generation.data import PromptSpec
    from ..models.llava.checkpoint import load_processor

    return PromptSpec.of_export(json.loads((folder / "generation.json").read_text())), load_processor(folder)


# ----------------------------------------------------------------------------------------------------- eval
def evaluate(args: argparse.Namespace, questions) -> int:
    import contextlib

    from ..console import info as say
    from ..console import progress_bar
    from ..datasets import subset
    from ..fsutil import write_text_atomic
    from ..generation import answers as generated
    from ..models.llava.stock import stock

    refuse(args, ("dtype",), "eval")
    if args.ort_provider != "cpu":
        raise PumerExportError("LLaVA exports run on ONNX Runtime's CPU provider so far")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    model, processor = load(args.model)
    if args.baseline_checkpoint:
        base, base_processor = load(args.baseline_checkpoint)
        if base.METHOD:
            raise PumerExportError(f"--baseline-checkpoint {args.baseline_checkpoint} carries {base.METHOD}; "
                                   "name the stock LLaVA the method was trained from")
    else:
        base = stock(model)
    variants = {"stock": base} if not model.METHOD else {"stock": base, model.METHOD: model}
    questions = subset(questions, args.limit) if args.limit else questions
    report_dir = Path(args.report)
    given = {variant: Path(path) for variant, path in (("stock", args.onnx_baseline),
                                                        (model.METHOD or "stock", args.onnx)) if path}
    with progress_bar() if not args.no_progress else contextlib.nullcontext() as progress:
        exports = generated.ensure_exports(variants, report_dir / "exports", given, progress) \
            if "ort" in backends else {}
        report = generated.evaluate(variants, processor, questions, backends=backends, exports=exports,
                                    batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                                    threads=args.threads, progress=progress)
    report["checkpoint"] = str(args.model)
    report["baseline"] = str(args.baseline_checkpoint) if args.baseline_checkpoint else \
        "the checkpoint's own weights without its method"
    report_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(report_dir / "report.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(report_dir / "report.md", generated.markdown(report))
    for variant, results in report["results"].items():
        for name, result in results.items():
            drop = f" (drop {result['drop']:+.2f} points vs stock)" if "drop" in result else ""
            say(f"{variant} on {name}: accuracy {result['accuracy']:.2f}{drop}")
    for name, value in report["agreement"].items():
        say(f"agreement {name}: {value:.1%}")
    say(f"wrote {report_dir / 'report.json'} and report.md ({report['questions']} questions)")
    return 0


# ----------------------------------------------------------------------------------------------------- bench
def bench(args: argparse.Namespace) -> int:
    import contextlib

    from ..console import info as say
    from ..console import out_console, progress_bar, table
    from ..fsutil import write_text_atomic
    from ..generation.bench import run_bench

    refuse(args, ("dtype", "image_size", "text_length", "onnx", "onnx_baseline", "engine", "engine_baseline"),
           "bench")
    if args.ort_provider != "cpu" or args.device != "cpu":
        raise PumerExportError("LLaVA benchmarks run on the CPU so far")
    backends = list(args.backends or ("torch", "ort"))
    from ..checkpoints import read_config_json
    from ..models.llava.checkpoint import method_of

    if not method_of(read_config_json(Path(args.model))):
        raise PumerExportError("the checkpoint is stock LLaVA: bench compares a method with it; apply one first "
                               "(pumer-export apply CKPT OUT --method victor|fastv) or bench a Victor checkpoint")
    model, processor = load(args.model)
    report_dir = Path(args.report)
    with progress_bar() if not args.no_progress else contextlib.nullcontext() as progress:
        report = run_bench(model, processor, backends=backends, batch_sizes=args.batch_sizes,
                           new_tokens=args.new_tokens, warmup=args.warmup, iters=args.iters, threads=args.threads,
                           export_dir=Path(args.export_dir) if args.export_dir else report_dir / "exports",
                           progress=progress)
    cost = report["costs"]
    rows = []
    for result in report["results"]:
        speed = result["speedup"]
        rows.append((result["backend"], result["batch"], f"{result['stock']['vision_ms']:.2f}",
                     f"{result['stock']['prefill_ms']:.2f}",
                     f"{result['method']['prefill_ms']:.2f}", f"{speed['prefill_ms']:.2f}x",
                     f"{speed['prefill_ms'] / cost['prefill_flop_ideal']:.0%}",
                     f"{result['stock']['decode_tokens_per_s']:.0f} / {result['method']['decode_tokens_per_s']:.0f}",
                     " ".join(f"{speed[f'generate_{n}_ms']:.2f}x" for n in args.new_tokens)))
    out_console.print(table(
        f"{method_title(model)} vs stock LLaVA (medians of {args.iters}; FLOP-ideal prefill "
        f"{cost['prefill_flop_ideal']:.2f}x, decode {cost['decode_flop_ideal']:.2f}x)",
        ("backend", "batch", "vision ms", "prefill ms stock", "prefill ms method", "prefill speedup", "of ideal",
         "decode tok/s stock / method", "end-to-end speedup (" + ", ".join(f"{n} tok" for n in args.new_tokens)
         + ")"), rows))
    kv = cost["kv_bytes_per_layer"]
    out_console.print(f"KV cache per sequence after {cost['new_tokens']} new tokens (float32): stock "
                      f"{sum(kv['stock']) / 1024:.1f} KiB, {report['method']} {sum(kv['method']) / 1024:.1f} KiB "
                      f"({cost['kv_bytes_ratio']:.2f}x); per layer "
                      + ", ".join(f"{b / 1024:.1f}" for b in kv["method"]) + " KiB")
    report_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(report_dir / "report.json", json.dumps(report, indent=2) + "\n")
    say(f"wrote {report_dir / 'report.json'}")
    return 0
