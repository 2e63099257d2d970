"""The metrics each evaluator reports: what a reward, a scheduler or a constraint can name.

Torch-free, so that an experiment's config is checked against them (``launch/config.py``) without importing the
trainers: ``mixnas status`` of a proxy run reads its config without torch.
"""

from __future__ import annotations

# The numeric metrics a proxy trial records: what :meth:`~mixnas.evaluators.proxy.ProxyEvaluator.score` measures,
# and params / macs, which the trial counts itself (``mixnas/launch/trial.py``).
PROXY_METRICS = ("top1", "top5", "loss", "train_loss", "epochs", "steps", "train_seconds", "eval_seconds",
                 "images_per_second", "params", "macs", "seed", "num_classes", "resolution", "train_images",
                 "val_images")
# The numeric metrics a supernet trial records (:class:`~mixnas.evaluators.supernet.evaluator.SupernetEvaluator`;
# params / macs counted by the trial).
SUPERNET_METRICS = ("top1", "top5", "loss", "eval_seconds", "bn_images", "val_images", "params", "macs",
                    "supernet_epoch", "num_classes", "resolution")
