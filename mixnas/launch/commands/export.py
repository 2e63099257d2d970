"""``mixnas export RUN_DIR [--top K | --pareto] [--format F ...] [-o DIR]``: write the best architectures out."""

from __future__ import annotations

import argparse

from mixnas.launch.export import FORMATS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a run's best or Pareto-optimal architectures",
        description="For each selected trial write block strings (TF and timm grammars), the architecture JSON "
        "and an ONNX file, plus a markdown table (params, MACs, predicted latency, proxy accuracy, reward) in "
        "the export folder (default RUN_DIR/export). Prints the table and, per trial, the block strings.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--top", type=int, metavar="K", help="the K best trials by reward (default 5)")
    which.add_argument("--pareto", action="store_true", help="the Pareto front of the run's objectives")
    p.add_argument("--format", dest="formats", action="extend", nargs="+", choices=FORMATS, metavar="F",
                   help=f"what to write, one or more of {', '.join(FORMATS)} (--format tf timm, or repeated; "
                   "default: all)")
    p.add_argument("-o", "--output", metavar="DIR", help="export folder (default RUN_DIR/export)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mixnas.errors import RunError
    from mixnas.launch.export import export_run

    if args.top is not None and args.top < 1:
        raise RunError(f"--top: expected an integer >= 1, got {args.top}")
    formats = list(dict.fromkeys(args.formats or FORMATS))  # in the order given, each once
    out, items = export_run(args.run_dir, top=args.top, pareto=args.pareto, formats=formats, out_dir=args.output)
    print((out / "README.md").read_text(), end="")
    grammar = "timm" if formats == ["timm"] else "tf"
    for item in items:
        strings = item.timm if grammar == "timm" else (
            (item.folder / "tf.txt").read_text().splitlines() if "tf.txt" in item.files else item.record.block_strings)
        if strings:
            print(f"\n# rank {item.rank}, trial {item.record.trial} ({grammar}):")
            for s in strings:
                print(s)
    print(f"\nexported {len(items)} architectures to {out}")
    return 0
