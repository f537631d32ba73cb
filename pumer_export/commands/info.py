"""``pumer-export info``: architecture, PuMer settings, token schedule and FLOPs of a checkpoint."""

from __future__ import annotations

import argparse
import json

from ._common import parse_image_size, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="show a checkpoint's architecture, its reduction method's settings, token counts and FLOPs",
        description=(
            "Show the architecture of a pumer-export checkpoint and the settings of its reduction method (PuMer, "
            "SmartTrim, Victor, FastV), the token counts before and after every reducing layer (for SmartTrim, "
            "whose counts depend on the input, the trimmer locations), and the analytic FLOPs with and without the "
            "reduction: their ratio is the FLOP-ideal speedup that benchmarks are compared with."
        ),
    )
    parser.add_argument("model", metavar="MODEL", help="pumer-export checkpoint directory (or a LLaVA checkpoint: its "
                        "prompt layout, the decoder layers on each length, prefill/decode FLOPs and KV-cache bytes)")
    parser.add_argument("--image-size", type=parse_image_size, default=None, metavar="HxW",
                        help="input image size HxW (default: the checkpoint's own image size)")
    parser.add_argument("--text-length", type=positive_int, default=None, metavar="T",
                        help="padded text length (default: the checkpoint's text position table size)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.set_defaults(func=run)


def model_info(config, image_size: tuple[int, int], text_length: int) -> dict:
    """Everything ``info`` reports, as a JSON-ready dict (the model family supplies architecture and FLOPs)."""
    from .. import methods, models
    from ..config import get_pumer_config
    from ..schedule import token_schedule

    family = models.for_model(config)
    pumer = get_pumer_config(config)

    def schedule_of(settings):
        return token_schedule(settings, num_layers=config.num_hidden_layers, text_tokens=text_length,
                              image_tokens=family.image_tokens(config, image_size), rules=family.SCHEDULE_RULES)

    schedule, baseline = schedule_of(pumer), schedule_of(pumer.without_reduction())
    flops_pumer = family.encoder_flops(config, schedule)
    flops_base = family.encoder_flops(config, baseline)
    method = methods.for_config(config)
    settings = method.settings(config)
    return {
        "family": family.NAME,
        "method": {"name": method.NAME, "title": method.TITLE, "provenance": method.PROVENANCE,
                   "backends": list(method.BACKENDS), "settings": settings.to_dict() if settings else None},
        "architecture": family.architecture(config),
        "pumer": pumer.to_dict(),
        "inputs": {"image_size": list(image_size), "text_length": text_length},
        "schedule": schedule.to_dict(),
        "flops": {
            "baseline_gflops": flops_base / 1e9,
            "pumer_gflops": flops_pumer / 1e9,
            "flop_ideal_speedup": flops_base / flops_pumer,
        },
    }


def run(args: argparse.Namespace) -> int:
    from ..checkpoints import load_pumer_config
    from ..console import out_console, table
    from ..schedule import input_size
    from ._common import check_input_lengths, is_generation_checkpoint

    if is_generation_checkpoint(args.model):
        from . import _generation

        return _generation.info(args)
    config = load_pumer_config(args.model)
    image_size, text_length = input_size(config, args.image_size, args.text_length)
    check_input_lengths(config, image_size, text_length)
    data = model_info(config, image_size, text_length)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0

    arch, pumer, flops, layers = data["architecture"], data["pumer"], data["flops"], data["schedule"]["layers"]
    method = data["method"]
    out_console.print(f"method: {method['title']}; semantics: {method['provenance']}; runs on "
                      f"{', '.join(method['backends'])}")
    out_console.print(table("Architecture", ("field", "value"), list(arch.items())))
    if method["name"] != "pumer":
        out_console.print(table(method["title"], ("setting", "value"),
                                [(k, v) for k, v in method["settings"].items() if k != "format_version"]))
        out_console.print(f"token and head counts depend on the input; untrimmed model GFLOPs per sample: "
                          f"{flops['baseline_gflops']:.3f}")
        return 0
    out_console.print(table("PuMer", ("setting", "value"), [(k, v) for k, v in pumer.items() if k != "format_version"]))
    rows = [
        (c["layer"], f"{c['text_in']}->{c['text_out']}", f"{c['image_in']}->{c['keep']}->{c['image_out']}",
         c["prune"], c["image_merge"], c["text_merge"], "yes" if c["active"] else "no (prune count 0)")
        for c in layers
    ]
    out_console.print(table(
        f"Token schedule ({image_size[0]}x{image_size[1]} image, text length {text_length})",
        ("layer", "text in->out", "image in->kept->out", "pruned", "img merged", "txt merged", "active"), rows,
    ))
    if layers:
        out_console.print("image tokens: " + ", ".join(f"{c['image_in']}->{c['keep']}->{c['image_out']}" for c in layers))
        out_console.print("text tokens: " + "->".join([str(layers[0]["text_in"])] + [str(c["text_out"]) for c in layers]))
    else:
        out_console.print("no reduce layers: this is the baseline model")
    out_console.print(
        f"{'encoder' if data['family'] == 'vilt' else 'model (towers + cross blocks)'} GFLOPs per sample: baseline {flops['baseline_gflops']:.3f}, PuMer {flops['pumer_gflops']:.3f}, "
        f"FLOP-ideal speedup {flops['flop_ideal_speedup']:.3f}x"
    )
    return 0
