"""``mixnas build ARCH``: show an architecture's per-block table, params and MACs (no training)."""

from __future__ import annotations

import argparse
import json
import sys

from mixnas import bounds
from mixnas.search_space.arch import MAX_CLASSES, MAX_RESOLUTION
from mixnas.search_space.arch import Architecture
from mixnas.launch.archref import resolve_cli_arch
from mixnas.search_space.timm_string import group_timm_stages
from mixnas.search_space.arch_strings import encode_arch
from mixnas.search_space.header import encode_header
from mixnas.search_space.counting import breakdown


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build",
        help="show an architecture's blocks, params and MACs",
        description="ARCH is a preset name (mixnet_s, mixnet_m, mixnet_l, mnasnet_a1, mnasnet_b1, mixnet_tiny), "
        "block strings (space- or comma-separated, TF, MnasNet or timm grammar, optionally after a '# mixnas: ...' line "
        "of global settings, as mixnas search / export print them), a file of them (.txt, .json such as an export's "
        "arch.json, .yaml), or a trial of a run: RUN_DIR:TRIAL or RUN_DIR:best.",
    )
    p.add_argument("arch", metavar="ARCH")
    p.add_argument("--resolution", type=bounds.integer(1, MAX_RESOLUTION).arg(), help="input resolution (default: the architecture's)")
    p.add_argument("--num-classes", type=bounds.integer(1, MAX_CLASSES).arg(), help="classifier outputs (default: the architecture's)")
    p.add_argument("--grammar", choices=["tf", "timm"], default="tf", help="grammar of the printed block strings")
    p.add_argument("--input-grammar", choices=["tf", "mnasnet", "timm"], help="grammar of ARCH (default: guessed)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    p.set_defaults(func=run)


def describe(arch: Architecture, grammar: str = "tf") -> dict:
    """Everything ``mixnas build --json`` prints, as a JSON-able dict."""
    counts = breakdown(arch)
    blocks = []
    for layer, c in zip(arch.layers(), counts.layers):
        blocks.append(
            {
                "block": layer.block_index,
                "repeat": layer.repeat_index,
                "in": layer.in_channels,
                "mid": layer.mid_channels,
                "out": layer.out_channels,
                "stride": layer.stride,
                "output_resolution": layer.output_size,
                "kernels": list(layer.kernel_sizes),
                "dilations": list(layer.dilations),
                "expand_groups": layer.expand_groups,
                "project_groups": layer.project_groups,
                "se": layer.se_channels,
                "swish": layer.swish,
                "skip": layer.has_skip,
                "params": c.params,
                "macs": c.macs,
            }
        )
    total = counts.total
    return {
        "name": arch.name,
        "id": arch.id,
        "resolution": arch.resolution,
        "num_classes": arch.num_classes,
        "params": total.params,
        "macs": total.macs,
        "block_strings": encode_arch(arch, grammar),
        "header": _header(arch, grammar),
        "grammar": grammar,
        "stem": {"out": arch.stem_channels, "params": counts.stem.params, "macs": counts.stem.macs},
        "head": {
            "in": arch.final_channels,
            "out": arch.head_channels,
            "params": counts.head.params,
            "macs": counts.head.macs,
        },
        "classifier": {"params": counts.classifier.params, "macs": counts.classifier.macs},
        "blocks": blocks,
        "architecture": arch.to_dict(),
    }


def _header(arch: Architecture, grammar: str) -> str:
    """The ``# mixnas:`` line that makes the printed strings rebuild this network (timm: width folded in)."""
    if grammar == "timm":
        params = arch.global_params.to_dict() | {"stem_size": arch.stem_channels, "width_multiplier": None}
        return encode_header(type(arch.global_params).from_dict(params), "timm")
    return encode_header(arch.global_params, grammar)


def format_table(info: dict) -> str:
    head = f"{'#':>3} {'in':>5} {'mid':>6} {'out':>5} {'s':>2} {'res':>4} {'kernels':<12} {'a/p':>4} {'se':>4} {'act':<5} {'skip':<4} {'params':>10} {'MACs':>13}"
    lines = [f"{info['name'] or 'architecture'} (id {info['id']}) at {info['resolution']}x{info['resolution']}, {info['num_classes']} classes", head, "-" * len(head)]
    stem = info["stem"]
    lines.append(f"{'stem':>3} {3:>5} {'':>6} {stem['out']:>5} {2:>2} {'':>4} {'3':<12} {'':>4} {'':>4} {'relu':<5} {'':<4} {stem['params']:>10,} {stem['macs']:>13,}")
    for b in info["blocks"]:
        kernels = ".".join(str(k) for k in b["kernels"])
        if any(d > 1 for d in b["dilations"]):
            kernels += "d"
        ap = f"{b['expand_groups']}/{b['project_groups']}"
        lines.append(
            f"{b['block']:>2}.{b['repeat']} {b['in']:>5} {b['mid']:>6} {b['out']:>5} {b['stride']:>2} {b['output_resolution']:>4} "
            f"{kernels:<12} {ap:>4} {b['se']:>4} {'swish' if b['swish'] else 'relu':<5} {'yes' if b['skip'] else '':<4} {b['params']:>10,} {b['macs']:>13,}"
        )
    h = info["head"]
    lines.append(f"{'head':>3} {h['in']:>5} {'':>6} {h['out']:>5} {1:>2} {'':>4} {'1':<12} {'':>4} {'':>4} {'relu':<5} {'':<4} {h['params']:>10,} {h['macs']:>13,}")
    c = info["classifier"]
    lines.append(f"{'fc':>3} {h['out']:>5} {'':>6} {info['num_classes']:>5} {'':>2} {'':>4} {'':<12} {'':>4} {'':>4} {'':<5} {'':<4} {c['params']:>10,} {c['macs']:>13,}")
    lines.append("-" * len(head))
    lines.append(f"total: {info['params']:,} params, {info['macs']:,} MACs ({info['macs'] / 1e6:.1f} M)")
    lines.append(f"block strings ({info['grammar']}):")
    strings = info["block_strings"]
    if info["grammar"] == "timm":  # one timm stage per line, as timm.txt: the lines read back as those stages
        strings = [" ".join(stage) for stage in group_timm_stages(strings)]
    lines.extend(f"  {s}" for s in [info["header"], *strings])
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    arch = resolve_cli_arch(args.arch, grammar=args.input_grammar)
    changes = {}
    if args.resolution is not None:
        changes["resolution"] = args.resolution
    if args.num_classes is not None:
        changes["num_classes"] = args.num_classes
    if changes:
        try:
            arch = arch.replace(**changes)
        except ValueError as exc:
            from mixnas.errors import ArchitectureError

            raise ArchitectureError(str(exc)) from None
    info = describe(arch, args.grammar)
    if args.json:
        json.dump(info, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(format_table(info))
    return 0
