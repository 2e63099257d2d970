"""A weight-sharing MixConv supernet of a stage space, its training loop and the evaluator that scores its
subnets (``docs/supernet.md``)."""

from __future__ import annotations

from mixnas.evaluators.supernet.layout import PositionMax, SupernetLayout, supernet_layout
from mixnas.evaluators.supernet.supernet import Supernet

__all__ = ["PositionMax", "Supernet", "SupernetLayout", "supernet_layout"]
