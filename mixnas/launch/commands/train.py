"""``mixnas train ARCH --data DATA``: train one architecture fully, checkpointing every epoch (``--resume``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mixnas import bounds
from mixnas.training.config import MAX_EPOCHS
from mixnas.data.spec import BUILTIN_SOURCES, DATA_RANGES, FORMATS, DataSpec
from mixnas.errors import RunError
from mixnas.launch.commands.epoch_log import EpochLog, check_output
from mixnas.launch.archref import resolve_cli_arch
from mixnas.textio import read_json
from mixnas.training.device import DEVICES, check_device
from mixnas.training.recipe import RECIPES, get_recipe

if TYPE_CHECKING:  # pragma: no cover
    from mixnas.training.trainer import Trainer

logger = logging.getLogger(__name__)
CURVES = ("top1", "top5", "loss", "train_loss", "lr", "images_per_second")  # drawn in TensorBoard


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train one architecture fully (MnasNet recipe, EMA, checkpoints, --resume)",
        description="Train ARCH on DATA with a full recipe, evaluating on the data set's test split where its "
        "format has one (IDX t10k, CIFAR test_batch, a folder's val/), else on a held-out part of train. Writes "
        "arch.json, weights.pt, metrics.json, a checkpoint every epoch and TensorBoard curves to --output. "
        "See docs/training.md.",
    )
    p.add_argument("arch", metavar="ARCH",
                   help="preset name (e.g. mixnet_tiny), block strings, a file or RUN_DIR:TRIAL / RUN_DIR:best")
    p.add_argument("--data", required=True, help="digits, synthetic or a path")
    p.add_argument("--format", default="auto", choices=["auto", *FORMATS], help="data format (default: guessed)")
    p.add_argument("--resolution", type=DATA_RANGES["resolution"].arg(), help="image size (default: the data's own, or the architecture's for folders)")
    p.add_argument("--images-per-class", type=DATA_RANGES["images_per_class"].arg(), help="at most this many training images per class (default: all)")
    p.add_argument("--epochs", type=bounds.integer(1, MAX_EPOCHS).arg(), default=350, help="whole epochs (default %(default)s, MnasNet's)")
    p.add_argument("--recipe", default="mnasnet", choices=sorted(RECIPES), help="default %(default)s")
    p.add_argument("--batch-size", type=bounds.BATCH.arg(), default=128, help="default %(default)s; the learning rate scales with it")
    p.add_argument("--output", help="run folder (default runs/train_ARCH)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    p.add_argument("--init", metavar="WEIGHTS",
                   help="fine-tune: start from these weights (a state dict .pt, or a train / export / "
                   "`mixnas supernet extract` folder holding weights.pt) instead of a fresh initialisation")
    p.add_argument("--seed", type=bounds.SEED.arg(), default=0, help="default %(default)s")
    p.add_argument("--device", choices=DEVICES, default="auto", help="default auto (CUDA with AMP when available)")
    p.add_argument("--threads", type=bounds.THREADS.arg(), help="torch CPU threads (default: torch's)")
    p.add_argument("--deterministic", action="store_true",
                   help="torch.use_deterministic_algorithms (with --device cpu --threads 1: bit-identical resumes)")
    p.add_argument("--no-tensorboard", action="store_true", help="do not write TensorBoard curves")
    p.add_argument("--json", action="store_true", help="print the final metrics as one JSON document on stdout")
    p.set_defaults(func=run)


def _check_args(args: argparse.Namespace) -> None:
    check_device(args.device, where="--device")  # the numbers are checked by their ranges while parsing


def _check_resume(output: Path, trainer: Trainer, resume: bool) -> None:
    from mixnas.training import checkpoint as ckpt

    if not check_output(output, ckpt.read_state(output), resume, "training"):
        return
    asked = trainer.run_record()
    saved = read_json(output / ckpt.RUN_FILE, RunError)
    if not isinstance(saved, dict):
        raise RunError(f"{output / ckpt.RUN_FILE}: not a mixnas training run record")
    for key in ("arch_id", "recipe", "epochs", "batch_size", "seed", "data", "init"):
        if saved.get(key) != asked[key]:
            shown = {"arch_id": "architecture", "recipe": "recipe"}.get(key, key.replace("_", " "))
            raise RunError(f"{output}: --resume with a different {shown} than the run there "
                           f"({_short(saved.get(key))} there, {_short(asked[key])} asked)")


def _is_image_folder(spec: DataSpec) -> bool:
    if spec.format != "auto":
        return spec.format == "folder"
    from mixnas.data.readers import detect_format

    return spec.source not in BUILTIN_SOURCES and detect_format(Path(spec.source).expanduser()) == "folder"


def _short(value: Any) -> str:
    if isinstance(value, dict) and "name" in value:
        return str(value["name"])
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:80] + "..."


def run(args: argparse.Namespace) -> int:
    import torch

    from mixnas.training.data import load_training_data
    from mixnas.training.trainer import Trainer

    _check_args(args)
    recipe = get_recipe(args.recipe)
    arch = resolve_cli_arch(args.arch)

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.deterministic:
        torch.use_deterministic_algorithms(True)
    spec = DataSpec(source=args.data, format=args.format, images_per_class=args.images_per_class,
                    resolution=args.resolution)
    if spec.resolution is None and _is_image_folder(spec):
        spec = spec.replace(resolution=arch.resolution)  # image folders have no size of their own
    data = load_training_data(spec)
    output = Path(args.output) if args.output else Path("runs") / f"train_{arch.name or arch.id[:12]}"
    log = EpochLog(lambda epoch, m: (
        f"epoch {epoch}/{args.epochs}: top1 {m['top1']:.4f}  top5 {m['top5']:.4f}  "
        f"train loss {m['train_loss'] if m['train_loss'] is None else round(m['train_loss'], 4)}  "
        f"lr {m['lr']:.5f}  {m['images_per_second']:.0f} img/s"))
    trainer = Trainer(arch, data, recipe, output, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                      device=args.device, on_epoch=log, init=Path(args.init) if args.init else None)
    _check_resume(output, trainer, args.resume)
    banner = (f"training {trainer.arch.name or trainer.arch.id} ({recipe.name}) on {args.data}: {data.num_classes} "
              f"classes at {data.resolution}x{data.resolution}, {int(data.train_labels.numel())} train images, "
              f"evaluating on {data.eval_split} ({int(data.eval_labels.numel())} images), {trainer.device} -> {output}")
    result = log.fit(trainer, output, "train", CURVES, tensorboard=not args.no_tensorboard, resume=args.resume,
                     banner=banner)
    if args.json:
        json.dump({k: v for k, v in result.items() if k != "history"}, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(f"top1 {result['top1']:.4f}  top5 {result['top5']:.4f} on {result['eval_split']} after "
              f"{result['epochs']} epochs ({result['evaluated_weights']} weights); {result['params']:,} params; "
              f"saved to {output}")
    return 0
