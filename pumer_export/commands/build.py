"""``pumer-export build``: a TensorRT engine (plan + sidecar JSON) from a pumer-export ONNX model."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "build",
        help="build a TensorRT engine from an exported ONNX model (needs TensorRT and a GPU)",
        description=(
            "Build a TensorRT engine from a pumer-export ONNX model with the pumer plugins. Writes OUT (the "
            "serialized engine) and OUT.json (its sidecar: TensorRT version, GPU, precision, profile, plugin "
            "library, ONNX and op-definition hashes), both atomically. The engine has one optimization profile "
            "over the batch dimension. Precision comes from the ONNX model (strongly typed network); on "
            "TensorRT 10, --fp16 on a float32 model sets the FP16 builder flag instead. "
            "A LLaVA export folder (Victor, FastV: vision, prefill and decode graphs) builds into the folder OUT: "
            "three engines with profiles over the batch (--batch, default 1:8:16), the prompt length (--prompt, "
            "default from the image placeholders and registers up to the model's positions) and the two past "
            "lengths the decode graph takes, which move together and reach --new-tokens past the longest prompt; "
            "run OUT with pumer-export run OUT --backend trt."
        ),
    )
    parser.add_argument("model", metavar="MODEL.onnx", help="exported ONNX model (or its export directory)")
    parser.add_argument("out", metavar="OUT.plan", help="engine file to write (the sidecar is OUT.plan.json); for a "
                                                        "LLaVA export, the folder of its engines")
    parser.add_argument("--plugins", metavar="LIB", default=None,
                        help="pumer plugin library (default: $PUMER_PLUGINS, then the build-plugins output)")
    parser.add_argument("--batch", metavar="MIN:OPT:MAX", default=None,
                        help="batch sizes of the optimization profile (default: 1:8:32 for a dynamic batch, "
                             "N:N:N for a model exported with a fixed batch N)")
    parser.add_argument("--prompt", metavar="MIN:OPT:MAX", default=None,
                        help="LLaVA exports: prompt lengths (in positions, image placeholders included) of the "
                             "profile")
    parser.add_argument("--new-tokens", metavar="T", type=int, default=None,
                        help="LLaVA exports: the most tokens a request generates (default 64)")
    parser.add_argument("--timing-cache", metavar="FILE", default=None,
                        help="TensorRT timing cache: read when it exists, written (updated) after the build")
    parser.add_argument("--workspace", metavar="SIZE", default=None,
                        help="workspace memory pool limit, e.g. 512M or 4G (default: TensorRT's, the GPU memory)")
    parser.add_argument("--fp16", action="store_true",
                        help="allow fp16 kernels for a float32 model (TensorRT 10 only; on TensorRT 11 export a "
                             "float16 model)")
    parser.add_argument("--print-trtexec", action="store_true",
                        help="print the equivalent trtexec and Polygraphy command lines instead of building (writes "
                             "MODEL.plugins.onnx, the model without the pumer function bodies, for them); needs no "
                             "TensorRT")
    parser.add_argument("--trt-version", metavar="X.Y", default=None,
                        help="TensorRT version the printed commands are for (default: the installed one; e.g. 10.3 "
                             "for JetPack 6)")
    parser.add_argument("--force", action="store_true", help="overwrite OUT and OUT.json")
    parser.add_argument("--verbose", action="store_true", help="show TensorRT's verbose log")
    parser.set_defaults(func=run)


def print_recipe(args: argparse.Namespace) -> int:
    from ..errors import PumerExportError
    from ..tensorrt.recipes import trtexec_recipe

    version = args.trt_version
    if version is None:
        try:
            from ..tensorrt import trt_api

            version = trt_api.tensorrt_version(trt_api.import_tensorrt())
        except PumerExportError:
            raise PumerExportError("TensorRT is not installed here: pass --trt-version X.Y, the version on the "
                                   "machine that builds the engine (e.g. 10.3 for JetPack 6)") from None
    recipe = trtexec_recipe(args.model, args.out, version=version, plugins=args.plugins, batch=args.batch,
                            fp16=args.fp16, timing_cache=args.timing_cache, workspace=args.workspace)
    print(recipe.render())
    return 0


def run(args: argparse.Namespace) -> int:
    from ..console import info, step
    from ..tensorrt.engine import build_engine

    from pathlib import Path

    from ..errors import PumerExportError

    if (Path(args.model) / "generation.json").is_file():
        return run_generation(args)
    for flag in ("prompt", "new_tokens"):
        if getattr(args, flag) is not None:
            raise PumerExportError(f"--{flag.replace('_', '-')} is for LLaVA export folders; {args.model} is not one")
    if Path(args.out).is_dir():
        raise PumerExportError(f"{args.out} is a directory; name the engine file, e.g. {Path(args.out) / 'model.plan'}")
    if args.print_trtexec:
        return print_recipe(args)

    with step(f"building TensorRT engine {args.out}"):
        result = build_engine(
            args.model, args.out, plugins=args.plugins, batch=args.batch, timing_cache=args.timing_cache,
            workspace=args.workspace, fp16=args.fp16, force=args.force, verbose=args.verbose,
        )
    record = result.record
    batch = record["profile"]["batch"]
    info(
        f"wrote {result.plan} and {result.sidecar.name} in {result.seconds:.1f} s: TensorRT "
        f"{record['tensorrt']['version']}, {record['gpu']['name']} (SM {record['gpu']['sm']}), "
        f"{record['precision']['description']}, batch {batch['min']}:{batch['opt']}:{batch['max']}, "
        f"{record['function_policy']['plugin_layers']} plugin layers"
    )
    return 0


def run_generation(args: argparse.Namespace) -> int:
    """A LLaVA export folder: its three engines into the folder OUT."""
    from ..console import info, progress_bar
    from ..errors import PumerExportError
    from ..tensorrt.generation import DEFAULT_NEW_TOKENS, build_generation

    for flag in ("plugins", "timing_cache", "print_trtexec", "trt_version"):
        if getattr(args, flag) not in (None, False):
            raise PumerExportError(f"--{flag.replace('_', '-')} is not supported for LLaVA exports (their graphs use "
                                   "standard ONNX operators only)")
    new_tokens = DEFAULT_NEW_TOKENS if args.new_tokens is None else args.new_tokens
    options = dict(batch=args.batch, prompt=args.prompt, new_tokens=new_tokens, workspace=args.workspace,
                   fp16=args.fp16, force=args.force)
    with progress_bar() as progress:
        result = build_generation(args.model, args.out, verbose=args.verbose, progress=progress, **options)
    plan = result.plan
    record = next(iter(result.records.values()))
    info(f"wrote {result.folder}: {', '.join(f'{g}.plan' for g in result.records)} in {result.seconds:.1f} s "
         f"(TensorRT {record['tensorrt']['version']}, {record['gpu']['name']}); profiles: "
         + ", ".join(f"{name} {value}" for name, value in plan.ranges.items())
         + f" (past_short = past_full - {plan.meta['dropped_tokens']}); run it with pumer-export run "
         f"{result.folder} --backend trt")
    return 0
