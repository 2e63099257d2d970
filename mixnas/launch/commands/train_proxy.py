"""``mixnas train-proxy --arch ARCH --data DATA``: proxy-train one architecture and print its held-out metrics."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import TYPE_CHECKING, Any

from mixnas import bounds
from mixnas.data.spec import DATA_RANGES, FORMATS, NORMALIZATIONS, DataSpec
from mixnas.errors import ArchitectureError, ConfigError
from mixnas.launch.archref import resolve_cli_arch, split_trial_ref, trial_record
from mixnas.outcome import TrialOutcome
from mixnas.search_space.arch import Architecture
from mixnas.search_space.counting import count
from mixnas.textio import path_kind
from mixnas.training.config import DEFAULT_EPOCHS, OPTIMIZERS, PROXY_RANGES, SCHEDULES, ProxyConfig
from mixnas.training.device import DEVICES, check_device

if TYPE_CHECKING:
    from mixnas.data.sets import ProxyData


def register(sub: argparse._SubParsersAction) -> None:
    defaults = ProxyConfig()
    p = sub.add_parser(
        "train-proxy",
        help="train one architecture briefly on a proxy task and report held-out accuracy",
        description="Train ARCH on a proxy task (a subset of DATA at low resolution) and report held-out top-1 / "
        "top-5, loss, time and images/s. DATA is 'digits' (scikit-learn's 8x8 digits), 'synthetic', or a path: a "
        "folder of class subfolders of JPEG/PNG files (e.g. ImageNet's train/), downsampled-ImageNet npz batches, "
        "CIFAR-10/100 binary files or MNIST-family IDX files. Progress goes to stderr.",
    )
    p.add_argument("--arch", required=True, help="preset name (e.g. mixnet_tiny, mixnet_s), block strings (with their '# mixnas:' settings line), a file "
                   "(.txt, .json, .yaml) or a trial of a run (RUN_DIR:TRIAL, RUN_DIR:best)")
    p.add_argument("--data", help="digits, synthetic or a path; leave it out with --arch RUN_DIR:TRIAL to train "
                   "with the run's own data, budget and settings (this reproduces the trial's recorded score)")
    p.add_argument("--format", default="auto", choices=["auto", *FORMATS], help="data format (default: guessed from the file names)")
    budget = p.add_argument_group("budget (training stops at the first limit reached)")
    budget.add_argument("--epochs", type=PROXY_RANGES["epochs"].arg(), help=f"epochs (default {DEFAULT_EPOCHS:g} unless --steps / --seconds is given)")
    budget.add_argument("--steps", type=PROXY_RANGES["steps"].arg(), help="optimizer steps")
    budget.add_argument("--seconds", type=PROXY_RANGES["seconds"].arg(), help="training seconds (not deterministic)")
    subset = p.add_argument_group("proxy subset")
    subset.add_argument("--resolution", type=DATA_RANGES["resolution"].arg(), help="image size (default: the architecture's)")
    subset.add_argument("--classes", help="a count of classes chosen with the seed, or a comma-separated list of class names")
    subset.add_argument("--images-per-class", type=DATA_RANGES["images_per_class"].arg(), help="at most this many images per class (default: all)")
    subset.add_argument("--val-fraction", type=DATA_RANGES["val_fraction"].arg(), default=DataSpec.val_fraction, help="held-out share of each class (default %(default)s)")
    subset.add_argument("--data-seed", type=DATA_RANGES["seed"].arg(), default=0, help="seed of the class / image choice and the split (default 0)")
    subset.add_argument("--normalize", choices=NORMALIZATIONS, default="dataset", help="input normalisation (default dataset)")
    subset.add_argument("--flip", action="store_true", help="random horizontal flips")
    subset.add_argument("--crop-padding", type=DATA_RANGES["crop_padding"].arg(), default=0, help="random crops after padding by this many pixels")
    subset.add_argument("--cache-dir", help="cache of decoded image folders (default $MIXNAS_CACHE_DIR or ~/.cache/mixnas/datasets)")
    subset.add_argument("--workers", type=DATA_RANGES["workers"].arg(), help="image decoding threads (default: one per core)")
    train = p.add_argument_group("training")
    train.add_argument("--seed", type=bounds.SEED.arg(), help="experiment seed; the trial seed mixes it with the architecture id "
                       "(default 0, or the run's seed with --arch RUN_DIR:TRIAL; seed+K reproduces rerank repeat K)")
    train.add_argument("--batch-size", type=PROXY_RANGES["batch_size"].arg(), default=defaults.batch_size, help="default %(default)s")
    train.add_argument("--optimizer", choices=OPTIMIZERS, default=defaults.optimizer, help="default %(default)s")
    train.add_argument("--lr", type=PROXY_RANGES["lr"].arg(), help="peak learning rate (default: scaled with the batch size)")
    train.add_argument("--schedule", choices=SCHEDULES, default=defaults.schedule, help="default %(default)s")
    train.add_argument("--weight-decay", type=PROXY_RANGES["weight_decay"].arg(), default=defaults.weight_decay, help="default %(default)s")
    train.add_argument("--label-smoothing", type=PROXY_RANGES["label_smoothing"].arg(), default=defaults.label_smoothing, help="default %(default)s")
    train.add_argument("--threads", type=PROXY_RANGES["threads"].arg(), default=1,
                       help="torch CPU threads (default 1: fastest when the CPU is shared; try 2+ on an idle machine)")
    train.add_argument("--device", choices=DEVICES, default="auto", help="default auto (CUDA when available)")
    p.add_argument("--json", action="store_true", help="print exactly one JSON document on stdout")
    p.set_defaults(func=run)
    p.set_defaults(recipe_defaults={k: p.get_default(k) for k in RECIPE_OPTIONS})


# Options that set the recipe: with --arch RUN_DIR:TRIAL and no --data the run's recipe is used, so they are refused.
RECIPE_OPTIONS = ("format", "epochs", "steps", "seconds", "resolution", "classes", "images_per_class", "val_fraction",
                  "data_seed", "normalize", "flip", "crop_padding", "batch_size", "optimizer", "lr", "schedule",
                  "weight_decay", "label_smoothing", "threads", "device")


def _classes(text: str | None) -> int | tuple[str, ...] | None:
    if text is None:
        return None
    text = text.strip()
    if text.isdigit():
        return int(text)
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _progress(epoch: int, metrics: dict[str, Any]) -> None:
    train_loss = metrics.get("train_loss")
    loss_text = f"{train_loss:.3f}" if train_loss is not None else "-"
    print(
        f"epoch {epoch}: top1 {metrics['top1']:.4f}  top5 {metrics['top5']:.4f}  train loss {loss_text}  "
        f"{metrics['images_per_second']:.0f} img/s  {metrics['train_seconds']:.1f} s",
        file=sys.stderr,
        flush=True,
    )


def _recipe(args: argparse.Namespace) -> tuple[DataSpec, ProxyConfig]:
    """The data subset and the training settings the options ask for."""
    spec = DataSpec(
        source=args.data, format=args.format, resolution=args.resolution, classes=_classes(args.classes),
        images_per_class=args.images_per_class, val_fraction=args.val_fraction, seed=args.data_seed,
        normalize=args.normalize, flip=args.flip, crop_padding=args.crop_padding, cache_dir=args.cache_dir,
        workers=args.workers,
    )
    config = ProxyConfig(
        epochs=args.epochs, steps=args.steps, seconds=args.seconds, batch_size=args.batch_size,
        optimizer=args.optimizer, lr=args.lr, schedule=args.schedule, weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing, threads=args.threads, device=args.device,
    )
    return spec, config


def run(args: argparse.Namespace) -> int:
    ref = split_trial_ref(args.arch)
    if args.data is None and ref is not None and path_kind(ref[0]) == "dir":
        return _reproduce(args, ref)
    if args.data is None:
        raise ConfigError("--data: required unless --arch names a trial of a run (RUN_DIR:TRIAL or RUN_DIR:best), "
                          "which brings the run's own data and recipe")
    check_device(args.device, where="--device")
    arch = resolve_cli_arch(args.arch)
    if args.resolution is not None:
        try:
            arch = arch.replace(resolution=args.resolution)
        except ValueError as exc:
            raise ArchitectureError(f"--resolution: {exc}") from None
    spec, config = _recipe(args)
    from mixnas.evaluators.base import TrialContext
    from mixnas.evaluators.proxy import ProxyEvaluator

    evaluator = ProxyEvaluator(spec, config)
    data = evaluator.proxy_data(arch)
    summary = data.summary()
    print(
        f"training {arch.name or arch.id} on {summary['source']}: {summary['classes']} classes at "
        f"{summary['resolution']}x{summary['resolution']}, {summary['train_images']} train / {summary['val_images']} held-out images",
        file=sys.stderr,
        flush=True,
    )
    outcome = evaluator.score(arch, TrialContext(seed=0 if args.seed is None else args.seed, report=_progress))
    result = _result(outcome, arch, data)
    result["arch"] = arch.name or arch.id
    result["data"] = summary
    if args.json:
        json.dump(_json_safe(result), sys.stdout)
        sys.stdout.write("\n")
    else:
        _print_summary(result)
    return 0 if result["status"] == "ok" else 1


def _reproduce(args: argparse.Namespace, ref: tuple[Any, Any]) -> int:
    """Train a trial of a run exactly as the search did (its data, budget, settings and seed) and compare."""
    changed = [k for k in RECIPE_OPTIONS if getattr(args, k) != args.recipe_defaults[k]]
    if changed:
        names = ", ".join("--" + k.replace("_", "-") for k in changed)
        raise ConfigError(f"{names}: --arch {args.arch} without --data trains with the run's own recipe; drop "
                          f"{names}, or pass --data to train with settings of your own")
    cfg, record = trial_record(*ref)
    if cfg.evaluator.type != "proxy":
        raise ConfigError(f"--arch {args.arch}: the run scores trials with a {cfg.evaluator.type} evaluator, not the "
                          "proxy trainer; pass --data to proxy-train the architecture")
    arch = resolve_cli_arch(f"{ref[0]}:{record.trial}")
    seed = cfg.seed if args.seed is None else args.seed
    recorded = _recorded(cfg, record, seed, ref[0])
    print(f"reproducing trial {record.trial} of {ref[0]} with the run's recipe and experiment seed {seed} "
          f"(no per-epoch evaluation, as in the search)", file=sys.stderr, flush=True)
    from mixnas.evaluators.base import TrialContext
    from mixnas.evaluators.proxy import ProxyEvaluator

    evaluator = ProxyEvaluator(cfg.evaluator.data_spec, cfg.evaluator.proxy)
    result = _result(evaluator.score(arch, TrialContext(seed=seed)), arch, evaluator.proxy_data(arch))
    result["arch"] = arch.name
    names = ("top1", "top5", "loss")
    result["recorded"] = {k: recorded.get(k) for k in names} if recorded is not None else None
    result["reproduced"] = recorded is not None and all(result.get(k) == recorded.get(k) for k in names)
    if args.json:
        json.dump(_json_safe(result), sys.stdout)
        sys.stdout.write("\n")
    else:
        _print_summary(result)
        if recorded is None:
            print(f"seed {seed}: no evaluation of trial {record.trial} with this seed is recorded in the run")
        else:
            same = "identical" if result["reproduced"] else "DIFFERENT (another machine, library or thread count?)"
            print(f"recorded top1 {recorded.get('top1')}, now {result.get('top1')}: {same}")
    return 0 if result["status"] == "ok" else 1


def _recorded(cfg: Any, record: Any, seed: int, run_dir: Any) -> dict[str, Any] | None:
    """The metrics recorded for ``record`` with experiment seed ``seed`` (the trial's own or a rerank repeat)."""
    if seed == cfg.seed:
        return record.metrics if record.status == "ok" else None
    from mixnas.launch.ledger import Ledger
    from mixnas.launch.rundir import RunPaths

    with Ledger(RunPaths(run_dir).ledger, readonly=True) as ledger:
        found = [r for r in ledger.repeats() if r.trial == record.trial and r.seed == seed and r.status == "ok"]
    return found[0].metrics if found else None


def _result(outcome: TrialOutcome, arch: Architecture, data: ProxyData) -> dict[str, Any]:
    """What the command prints: the outcome as one flat dict (``status``, ``error`` and the metrics) with the
    params and MACs of the network as trained (the data set's classes and resolution), counted here: without a
    search, no trial counts them."""
    counts = count(arch.replace(num_classes=data.num_classes, resolution=data.resolution))
    return {"status": outcome.status.value, "error": outcome.reason, **outcome.metrics, "params": counts.params,
            "macs": counts.macs}


def _json_safe(value: Any) -> Any:
    """Strict JSON: non-finite floats become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _print_summary(result: dict[str, Any]) -> None:
    print(f"status: {result['status']}" + (f" ({result['error']})" if result.get("error") else ""))
    print(f"top1 {result['top1']:.4f}  top5 {result['top5']:.4f}  held-out loss {result['loss'] if result['loss'] is None else round(result['loss'], 4)}")
    print(
        f"{result['epochs']:g} epochs, {result['steps']} steps in {result['train_seconds']:.1f} s "
        f"({result['images_per_second']:.0f} img/s); evaluation {result['eval_seconds']:.1f} s"
    )
    print(f"{result['params']:,} params, {result['macs']:,} MACs at {result['resolution']}x{result['resolution']}, {result['num_classes']} classes")
