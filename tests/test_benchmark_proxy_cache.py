"""The supernet-fidelity benchmark's proxy cache: results survive a restart, a bad file is one clear line."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fidelity():
    spec = importlib.util.spec_from_file_location("supernet_fidelity", ROOT / "benchmarks" / "supernet_fidelity.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["supernet_fidelity"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("supernet_fidelity", None)


def test_the_cache_keeps_results_across_restarts(tmp_path: Path, fidelity) -> None:
    path = str(tmp_path / "proxy.json")
    cache = fidelity.ProxyCache(path, {"epochs": 3})
    cache.put((0, 1, 2), 7, {"top1": 0.5})
    again = fidelity.ProxyCache(path, {"epochs": 3})
    assert again.get((0, 1, 2), 7) == {"top1": 0.5} and again.get((0, 1, 2), 8) is None
    with pytest.raises(SystemExit, match="proxy results of other settings"):
        fidelity.ProxyCache(path, {"epochs": 10})


@pytest.mark.parametrize(
    "text,message", [("{not json", "--proxy-cache: .*not valid JSON"), ("[1, 2]", "not a proxy cache"),
                     ('{"settings": {}}', "not a proxy cache")]
)
def test_a_bad_cache_file_is_one_clear_line(tmp_path: Path, fidelity, text: str, message: str) -> None:
    path = tmp_path / "proxy.json"
    path.write_text(text)
    with pytest.raises(SystemExit, match=message):
        fidelity.ProxyCache(str(path), {"epochs": 3})
