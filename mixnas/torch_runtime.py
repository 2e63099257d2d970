"""Process-wide torch settings scoped to a block: a leaf module that the evaluators share.

torch is imported when a function runs, not at import, so modules that only sometimes need torch can import
this one freely.
"""

from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)`` and restore the previous value afterwards.

    ``None`` leaves torch's setting alone.
    """
    if threads is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
