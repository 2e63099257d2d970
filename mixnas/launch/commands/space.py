"""``mixnas space show SPACE`` and ``mixnas space sample SPACE``: inspect a search space and draw from it."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from mixnas import bounds
from mixnas.errors import ConfigError
from mixnas.search_space.arch_strings import encode_arch
from mixnas.search_space.presets import arch_preset_names, load_arch_preset, space_preset_names
from mixnas.search_space.spaces import ChoiceSpace, SearchSpace, StageSpace, load_space


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "space",
        help="show a search space or sample architectures from it",
        description="SPACE is a preset name (" + ", ".join(space_preset_names()) + ") or a YAML file.",
    )
    actions = p.add_subparsers(dest="space_command", metavar="ACTION")
    actions.required = True

    show = actions.add_parser("show", help="dimensions, choices, cardinality and contained reference archs")
    show.add_argument("space", metavar="SPACE")
    show.add_argument("--json", action="store_true", help="print one JSON document")
    show.set_defaults(func=run_show)

    sample = actions.add_parser("sample", help="sample architectures: block strings, params, MACs, encoding")
    sample.add_argument("space", metavar="SPACE")
    sample.add_argument("-n", type=bounds.integer(1, 100_000).arg(), default=5, help="how many samples (default 5)")
    sample.add_argument("--seed", type=bounds.SEED.arg(), default=0, help="random seed (default 0)")
    sample.add_argument("--json", action="store_true", help="print one JSON list")
    sample.set_defaults(func=run_sample)


def contained_references(space: SearchSpace) -> dict[str, bool]:
    """Which reference architectures (arch presets) are points of a stage space; empty for choice spaces."""
    if not isinstance(space, StageSpace):
        return {}
    return {name: space.contains(load_arch_preset(name)) for name in arch_preset_names()}


def show_info(space: SearchSpace) -> dict[str, Any]:
    """What ``mixnas space show --json`` prints."""
    info: dict[str, Any] = {
        "name": space.name,
        "kind": "stages" if isinstance(space, StageSpace) else "choices",
        "cardinality": space.cardinality,
        "log10_cardinality": space.log10_cardinality,
        "dimensions": [d.to_dict() for d in space.dimensions],
        "contains": contained_references(space),
    }
    if isinstance(space, StageSpace):
        c = space.constraints
        info["constraints"] = {"max_params": c.max_params, "max_macs": c.max_macs}
    elif isinstance(space, ChoiceSpace):
        info["constants"] = space.constants
    return info


def _choices_text(choices: list) -> str:
    return " | ".join(json.dumps(c) for c in choices)


def run_show(args: argparse.Namespace) -> int:
    space = load_space(args.space)
    info = show_info(space)
    if args.json:
        json.dump(info, sys.stdout)
        sys.stdout.write("\n")
        return 0
    width = max((len(d["name"]) for d in info["dimensions"]), default=4)
    print(f"space {info['name']} ({info['kind']}): {len(info['dimensions'])} dimensions")
    for d in info["dimensions"]:
        print(f"  {d['name']:<{width}}  {_choices_text(d['choices'])}")
    print(f"cardinality: {info['cardinality']:,} (10^{info['log10_cardinality']:.2f})")
    if info["contains"]:
        inside = [n for n, ok in info["contains"].items() if ok]
        outside = [n for n, ok in info["contains"].items() if not ok]
        print("contains: " + (", ".join(inside) or "none of the reference architectures"))
        if outside:
            print("does not contain: " + ", ".join(outside))
    return 0


MAX_SAMPLES = 100_000  # a printed sample; more is a typo, not a request


def sample_info(space: SearchSpace, n: int, seed: int) -> list[dict[str, Any]]:
    """What ``mixnas space sample --json`` prints: one object per sample."""
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n):
        encoding = space.sample(rng)
        item: dict[str, Any] = {"encoding": list(encoding)}
        if isinstance(space, StageSpace):
            arch = space.decode(encoding)
            counted = space.count(encoding)
            item.update(
                {"id": arch.id, "block_strings": encode_arch(arch, "tf"), "params": counted.params,
                 "macs": counted.macs, "architecture": arch.to_dict()}
            )
        else:
            item["values"] = space.decode(encoding)
        samples.append(item)
    return samples


def run_sample(args: argparse.Namespace) -> int:
    if not 0 <= args.n <= MAX_SAMPLES:
        raise ConfigError(f"space sample: -n must be in 0..{MAX_SAMPLES}, got {args.n}")
    if args.seed < 0:
        raise ConfigError(f"space sample: --seed must be 0 or more, got {args.seed}")
    space = load_space(args.space)
    samples = sample_info(space, args.n, args.seed)
    if args.json:
        json.dump(samples, sys.stdout)
        sys.stdout.write("\n")
        return 0
    for i, item in enumerate(samples):
        if "block_strings" in item:
            print(f"#{i} {item['id']}: {item['params']:,} params, {item['macs']:,} MACs  encoding {item['encoding']}")
            print("  " + " ".join(item["block_strings"]))
        else:
            print(f"#{i} encoding {item['encoding']}: {json.dumps(item['values'])}")
    return 0
