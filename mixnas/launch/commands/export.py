"""``mixnas export PATH [--top K | --pareto] [--format F ...] [-o DIR]``: write a search run's best architectures,
or a ``mixnas train`` folder's trained model, out."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mixnas import bounds
from mixnas.launch.export import DEFAULT_FORMATS, FORMATS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a run's best or Pareto-optimal architectures, or a trained model",
        description="PATH is a search run directory or a `mixnas train` output folder. For a search run: per "
        "selected trial, block strings (TF and timm grammars), the architecture JSON and an ONNX file with random "
        "weights, plus a markdown table (params, MACs, predicted latency, proxy accuracy, reward); prints the "
        "table and, per trial, the block strings. For a train folder: the trained weights (weights.pt) and "
        "arch.json always, the block strings and an ONNX file with the trained weights, a dynamic batch axis and "
        "metadata as --format asks, and a README with the test metrics and how to run it. Default folder: "
        "PATH/export. See docs/training.md.",
    )
    p.add_argument("run_dir", metavar="PATH", help="a search run directory (RUN_DIR) or a train folder (TRAIN_DIR)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--top", type=bounds.integer(1, 100_000).arg(), metavar="K", help="the K best trials by reward (default 5; search runs)")
    which.add_argument("--pareto", action="store_true", help="the Pareto front of the run's objectives (search runs)")
    p.add_argument("--format", dest="formats", action="extend", nargs="+", choices=FORMATS, metavar="F",
                   help=f"what to write, one or more of {', '.join(FORMATS)} (--format tf timm, or repeated; "
                   f"default: {' '.join(DEFAULT_FORMATS)}; a train folder's export always has weights.pt and "
                   "arch.json; onnx-int8, train folders only: model.int8.onnx calibrated on the training images, "
                   "and every ONNX file scored in ONNX Runtime on the test split)")
    p.add_argument("-o", "--output", metavar="DIR", help="export folder (default PATH/export)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mixnas.errors import RunError
    from mixnas.launch.export import export_kind

    if args.top is not None and args.top < 1:
        raise RunError(f"--top: expected an integer >= 1, got {args.top}")
    formats = list(dict.fromkeys(args.formats or DEFAULT_FORMATS))  # in the order given, each once
    if export_kind(args.run_dir) == "train":
        if args.top is not None or args.pareto:
            raise RunError(f"--top / --pareto choose trials of a search run; {args.run_dir} is a mixnas train "
                           "folder (one trained model)")
        return _export_trained(Path(args.run_dir), formats, args.output)
    return _export_run(args, formats)


def _export_trained(path: Path, formats: list[str], output: str | None) -> int:
    from mixnas.launch.export import export_trained

    item = export_trained(path, formats=formats, out_dir=output)
    print((item.folder / "README.md").read_text(), end="")
    print(f"\nexported the trained model of {path} ({', '.join(item.files)}) to {item.folder}")
    return 0


def _export_run(args: argparse.Namespace, formats: list[str]) -> int:
    from mixnas.launch.export import UNTRAINED, export_run

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
    print(f"mixnas: note: {UNTRAINED}", file=sys.stderr)
    return 0
