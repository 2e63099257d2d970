"""``mixnas supernet train`` (a weight-sharing supernet of a stage space) and ``mixnas supernet extract`` (one
member as a stand-alone trained model). See docs/supernet.md."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from mixnas import bounds
from mixnas.training.config import SUPERNET_RANGES
from mixnas.data.spec import DATA_RANGES, FORMATS, DataSpec
from mixnas.errors import ConfigError, RunError
from mixnas.launch.commands.epoch_log import EpochLog, check_output
from mixnas.training.device import DEVICES, check_device

logger = logging.getLogger(__name__)
CURVES = ("train_loss", "lr", "images_per_second", "largest_top1", "smallest_top1")  # drawn in TensorBoard


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("supernet", help="train a weight-sharing supernet of a stage space; extract a member",
                       description="A weight-sharing MixConv supernet: `train` it once, then search with "
                       "`evaluator: {type: supernet, checkpoint: DIR}`, and `extract` a member. See docs/supernet.md.")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    t = actions.add_parser("train", help="train the supernet of a space (sandwich rule, checkpoints, --resume)",
                           description="Train the supernet of SPACE on the training split of DATA (the held-out "
                           "split is left for the evaluator): each step trains the largest, the smallest and "
                           "--random-subnets uniformly sampled members. A checkpoint every epoch; --resume continues.")
    t.add_argument("--space", required=True, help="a stage-space preset (tiny, mixnet, ...) or a YAML file")
    t.add_argument("--data", required=True, help="digits, synthetic or a path")
    t.add_argument("--format", default="auto", choices=["auto", *FORMATS], help="data format (default: guessed)")
    t.add_argument("--resolution", type=DATA_RANGES["resolution"].arg(), help="image size (default: the data's own)")
    t.add_argument("--images-per-class", type=DATA_RANGES["images_per_class"].arg(), help="at most this many images per class (default: all)")
    t.add_argument("--epochs", type=SUPERNET_RANGES["epochs"].arg(), default=10, help="default %(default)s")
    t.add_argument("--batch-size", type=SUPERNET_RANGES["batch_size"].arg(), default=64, help="default %(default)s")
    t.add_argument("--random-subnets", type=SUPERNET_RANGES["random_subnets"].arg(), default=2,
                   help="sampled members per step besides the largest and the smallest (default %(default)s)")
    t.add_argument("--no-distill", action="store_true", help="sampled members learn from the labels, not from the "
                   "largest member's predictions")
    t.add_argument("--lr", type=SUPERNET_RANGES["lr"].arg(), help="peak SGD learning rate (default 0.1 * batch size / 64)")
    t.add_argument("--seed", type=SUPERNET_RANGES["seed"].arg(), default=0, help="default %(default)s")
    t.add_argument("--device", choices=DEVICES, default="auto", help="default %(default)s")
    t.add_argument("--threads", type=bounds.THREADS.arg(), help="torch CPU threads (default: torch's)")
    t.add_argument("--output", required=True, help="the supernet folder")
    t.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    t.add_argument("--no-tensorboard", action="store_true", help="do not write TensorBoard curves")
    t.add_argument("--json", action="store_true", help="print the per-epoch history as one JSON document")
    t.set_defaults(func=run_train)
    e = actions.add_parser("extract", help="one member as a stand-alone model folder (load_model, export)",
                           description="Write ARCH's slice of the supernet in DIR, with batch norm recalibrated "
                           "on training images, as a folder that mixnas.load_model and `mixnas export` read "
                           "(arch.json, weights.pt, run.json, metrics.json with its held-out metrics).")
    e.add_argument("supernet_dir", metavar="DIR", help="a `mixnas supernet train` folder")
    e.add_argument("arch", metavar="ARCH", help="a member of the supernet's space: preset, block strings, a file, "
                   "an arch.json or RUN_DIR:TRIAL / RUN_DIR:best")
    e.add_argument("-o", "--output", required=True, help="the folder to write")
    e.add_argument("--bn-batches", type=bounds.integer(0, 100_000).arg(), default=16, help="recalibration batches (default %(default)s)")
    e.add_argument("--json", action="store_true", help="print the held-out metrics as one JSON document")
    e.set_defaults(func=run_extract)


def _check_train_args(args: argparse.Namespace) -> None:
    check_device(args.device, where="--device")  # the numbers are checked by their ranges while parsing


def _training(args: argparse.Namespace) -> Any:
    from mixnas.training.config import SupernetTraining

    # every number was checked by its option's range while parsing (SUPERNET_RANGES, which SupernetTraining keeps)
    return SupernetTraining(epochs=args.epochs, batch_size=args.batch_size, random_subnets=args.random_subnets,
                            distill=not args.no_distill, lr=args.lr, seed=args.seed, device=args.device)


def _check_resume(output: Path, record: dict[str, Any], resume: bool) -> None:
    from mixnas.evaluators.supernet import store

    if not check_output(output, store.read_state(output), resume, "supernet"):
        return
    saved = store.read_record(output)
    for key in ("space", "data", "training", "num_classes"):
        if saved.get(key) != json.loads(json.dumps(record[key])):
            raise RunError(f"{output}: --resume with a different {key} than the run there")


def run_train(args: argparse.Namespace) -> int:
    _check_train_args(args)
    training = _training(args)
    import torch

    from mixnas.data.load import load_proxy_data
    from mixnas.evaluators.supernet.supernet import Supernet
    from mixnas.evaluators.supernet.train import SupernetTrainer
    from mixnas.search_space.spaces import load_space

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    space = load_space(args.space)
    Supernet(space)  # refuses a space it cannot share before any data is read
    data = load_proxy_data(DataSpec(source=args.data, format=args.format, resolution=args.resolution,
                                    images_per_class=args.images_per_class))
    output = Path(args.output)
    log = EpochLog(lambda epoch, m: (
        f"epoch {epoch}/{training.epochs}: train loss {'-' if m['train_loss'] is None else format(m['train_loss'], '.4f')}"
        f"  largest top1 {m['largest_top1']:.4f}  smallest top1 {m['smallest_top1']:.4f}  lr {m['lr']:.5f}  "
        f"{m['images_per_second']:.0f} img/s  {m['train_seconds']:.1f} s"))
    trainer = SupernetTrainer(space, data, output, training, on_epoch=log)
    _check_resume(output, trainer.record(), args.resume)
    banner = (f"training the supernet of {space.name!r} on {args.data}: {data.num_classes} classes at "
              f"{data.resolution}x{data.resolution}, {int(data.train_labels.numel())} train images "
              f"({int(data.val_labels.numel())} held out for the evaluator), {trainer.device} -> {output}")
    result = log.fit(trainer, output, "supernet", CURVES, tensorboard=not args.no_tensorboard, resume=args.resume,
                     banner=banner)
    if args.json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(f"supernet trained for {result['epochs']} epochs ({result['steps']} steps); saved to {output}")
    return 0


def extract_folder(supernet_dir: str, arch_spec: Any, output: Path, *, bn_batches: int = 16) -> dict[str, Any]:
    """Write a member as a ``mixnas train``-style folder (arch.json, weights.pt, run.json, metrics.json)."""
    from mixnas.evaluators.supernet.evaluator import SupernetEvaluator, evaluate_model
    from mixnas.search_space.counting import count
    from mixnas.textio import write_json_atomic
    from mixnas.tensorfiles import save_tensors
    from mixnas.textio import output_folder
    from mixnas.training import checkpoint as ckpt

    if output.resolve() == Path(supernet_dir).resolve():
        raise RunError(f"-o {output}: the extracted folder must not be the supernet folder itself")
    evaluator = SupernetEvaluator(supernet_dir, bn_batches=bn_batches)
    arch, model, bn_images = evaluator.calibrated(arch_spec)
    data = evaluator.data
    held_out = evaluate_model(model, data.val_images, data.val_labels, data.normalizer(evaluator.device), 500)
    counts = count(arch)
    share = round(100 * data.spec.val_fraction)
    metrics = {"arch": arch.name or arch.id, "arch_id": arch.id, "recipe": "supernet", "epochs": evaluator.epoch, "top1": held_out["top1"], "top5": held_out["top5"],
               "loss": held_out["loss"], "eval_split": f"held-out {share}% of train",
               "evaluated_weights": f"supernet-slice (BN recalibrated on {bn_images} images)",
               "params": counts.params, "macs": counts.macs, "num_classes": data.num_classes,
               "resolution": data.resolution}
    run = {"source": "supernet", "supernet": str(Path(supernet_dir).resolve()), "arch_id": arch.id,
           "arch": arch.name or arch.id, "epochs": evaluator.epoch, "data": data.spec.to_dict(),
           "preprocessing": evaluator.record["preprocessing"] | {
               "input": "float32 NCHW: RGB pixels / 255, then (x - mean) / std per channel (grayscale: the value "
                        "repeated in all 3 channels)"}}
    output_folder(output, RunError)
    ckpt.write_arch(output, arch)
    save_tensors(output / ckpt.WEIGHTS_FILE, {k: v.detach().cpu() for k, v in model.state_dict().items()})
    write_json_atomic(output / ckpt.RUN_FILE, run, indent=1)
    write_json_atomic(output / ckpt.METRICS_FILE, metrics, indent=1)
    return metrics


def run_extract(args: argparse.Namespace) -> int:
    from mixnas.launch.archref import resolve_cli_arch

    if not 0 <= args.bn_batches <= 100_000:
        raise ConfigError(f"--bn-batches: expected an integer in 0..100000, got {args.bn_batches}")
    arch = resolve_cli_arch(args.arch)
    metrics = extract_folder(args.supernet_dir, arch, Path(args.output), bn_batches=args.bn_batches)
    if args.json:
        json.dump(metrics, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(f"{metrics['arch']}: held-out top1 {metrics['top1']:.4f} as a slice of the supernet "
              f"({metrics['params']:,} params); written to {args.output} (mixnas.load_model, mixnas export; "
              f"fine-tune: see docs/supernet.md)")
    return 0
