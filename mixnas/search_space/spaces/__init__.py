"""Declarative search spaces: named dimensions with finite choices, and the encodings controllers work on.

One module per concept:

* :mod:`.base`: :class:`Dimension`, :class:`SearchSpace` (shape, encodings, sampling, mutation, neighbours).
* :mod:`.choice`: :class:`ChoiceSpace`, generic named dimensions decoding to a ``dict`` (tabular benchmarks such as
  NAS-Bench-Macro, hyper-parameter spaces).
* :mod:`.stage`: :class:`StageSpace`, MnasNet's factorized hierarchical space with MixNet's choices, decoding to an
  :class:`~mixnas.search_space.arch.Architecture`, with its codec, caches and params / MACs count.
* :mod:`.yaml_reader`: :func:`load_space` (preset name, YAML path or mapping, with ``extends`` / overrides).

A choice list with a single value is a constant, not a dimension (see ``docs/search_spaces.md``).
"""

from __future__ import annotations

from mixnas.search_space.spaces.base import DEFAULT_MAX_REJECTIONS, Dimension, Encoding, SearchSpace
from mixnas.search_space.spaces.choice import ChoiceSpace, nas_bench_macro_encoding, nas_bench_macro_key
from mixnas.search_space.spaces.stage import Constraints, StageSpace, kernels_of_groups
from mixnas.search_space.spaces.yaml_reader import deep_merge, load_space, space_from_dict

__all__ = [
    "DEFAULT_MAX_REJECTIONS",
    "ChoiceSpace",
    "Constraints",
    "Dimension",
    "Encoding",
    "SearchSpace",
    "StageSpace",
    "deep_merge",
    "kernels_of_groups",
    "load_space",
    "nas_bench_macro_encoding",
    "nas_bench_macro_key",
    "space_from_dict",
]
