"""Proxy trainer: real tiny training runs on digits / synthetic data, statuses, determinism, early stop, CLI."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from torch import nn

from mixnas.errors import ConfigError
from mixnas.data.spec import DataSpec
from mixnas.evaluators.base import TrialContext
from mixnas.evaluators.metrics import PROXY_METRICS
from mixnas.evaluators.proxy import ProxyEvaluator
from mixnas.outcome import Status, TrialOutcome
from mixnas.training.config import ProxyConfig, trial_seed
from mixnas.training.optim import RMSpropTF, learning_rate
from mixnas.launch.cli import main
from mixnas.search_space.presets import resolve_arch

TINY = resolve_arch("mixnet_tiny")
SMOKE_DATA = DataSpec("synthetic", classes=4, images_per_class=40, resolution=16)
TIMING_KEYS = ("train_seconds", "eval_seconds", "images_per_second")


def without_timings(outcome: TrialOutcome) -> dict[str, Any]:
    """Everything of an outcome that is deterministic: status, reason, retryable and the metrics but timings."""
    metrics = {k: v for k, v in outcome.metrics.items() if k not in TIMING_KEYS}
    return {"status": outcome.status, "reason": outcome.reason, "retryable": outcome.retryable, **metrics}


def test_mixnet_tiny_on_digits_ends_well_above_chance() -> None:
    evaluator = ProxyEvaluator(DataSpec("digits", resolution=32), ProxyConfig(epochs=2, threads=1))
    outcome = evaluator.score(TINY, TrialContext(seed=0))
    assert outcome.status is Status.OK, outcome
    result = outcome.metrics
    assert result["top1"] >= 0.6  # chance is 0.1; the CLI's default budget reaches ~0.97
    assert result["top5"] >= result["top1"]
    assert result["epochs"] == 2.0 and result["steps"] == 2 * (1438 // 64)
    assert result["num_classes"] == 10 and result["resolution"] == 32
    assert result["images_per_second"] > 0
    assert outcome.reason is None and result["stopped_early"] is False
    json.dumps(result, allow_nan=False)
    # the metric names a config may use are exactly the numbers a trial records: the trainer's and the params /
    # MACs the trial counts itself (the trainer does not count them again; the trial's record is checked in
    # test_a_search_trial_evaluates_per_epoch_only_for_a_scheduler)
    numeric = {k for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    assert "params" not in result and "macs" not in result
    assert numeric | {"params", "macs"} == set(PROXY_METRICS)


def test_same_seed_same_result_and_global_rng_untouched() -> None:
    config = ProxyConfig(steps=6, batch_size=32, threads=1)
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = ProxyEvaluator(SMOKE_DATA, config).score(TINY, TrialContext(seed=3))
    after = torch.rand(3)
    b = ProxyEvaluator(SMOKE_DATA, config).score(TINY, TrialContext(seed=3))
    assert torch.equal(before, after)  # the trial ran inside fork_rng
    assert a.status is Status.OK
    assert without_timings(a) == without_timings(b)
    c = ProxyEvaluator(SMOKE_DATA, config).score(TINY, TrialContext(seed=4))
    assert c.metrics["loss"] != a.metrics["loss"]


def test_reporting_does_not_change_the_run_and_can_stop_it() -> None:
    config = ProxyConfig(epochs=3, batch_size=32, threads=1)
    evaluator = ProxyEvaluator(SMOKE_DATA, config)
    seen: list[int] = []
    full = evaluator.score(TINY, TrialContext(seed=1, report=lambda epoch, metrics: seen.append(epoch)))
    quiet = evaluator.score(TINY, TrialContext(seed=1))
    assert seen == [1, 2, 3]
    assert without_timings(full) == without_timings(quiet)

    stops: list[int] = []

    def stop_after_first(epoch: int, metrics: dict[str, Any]) -> bool:
        stops.append(epoch)
        assert 0.0 <= metrics["top1"] <= 1.0
        return True

    stopped = evaluator.score(TINY, TrialContext(seed=1, report=stop_after_first))
    assert stops == [1]
    assert stopped.status is Status.PRUNED and stopped.metrics["stopped_early"] is True
    assert stopped.metrics["epochs"] == 1.0


def test_huge_learning_rate_diverges_with_partial_metrics() -> None:
    config = ProxyConfig(epochs=3, batch_size=32, lr=100.0, warmup_epochs=0, threads=1)
    outcome = ProxyEvaluator(SMOKE_DATA, config).score(TINY, TrialContext(seed=0))
    assert outcome.status is Status.DIVERGED, outcome
    assert "non-finite" in outcome.reason and outcome.retryable
    assert outcome.metrics["steps"] >= 1 and outcome.metrics["train_seconds"] > 0  # partial metrics are kept
    assert outcome.metrics["train_loss"] is None
    json.dumps(outcome.metrics, allow_nan=False)


def test_build_or_forward_exception_is_a_failed_trial() -> None:
    def broken_build(arch: Any, num_classes: int, **kwargs: Any) -> nn.Module:
        raise RuntimeError("no kernel for this block")

    outcome = ProxyEvaluator(SMOKE_DATA, ProxyConfig(steps=2, threads=1), build_fn=broken_build).score(
        TINY, TrialContext())
    assert outcome.status is Status.FAILED
    assert outcome.reason == "RuntimeError: no kernel for this block"
    assert outcome.metrics["arch_id"] == TINY.id  # what was known before the failure is kept

    class BadForward(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x)  # wrong shape for an image batch

    outcome = ProxyEvaluator(SMOKE_DATA, ProxyConfig(steps=2, threads=1), build_fn=lambda *a, **k: BadForward()).score(
        TINY, TrialContext())
    assert outcome.status is Status.FAILED and outcome.reason.startswith("RuntimeError")


def test_a_candidate_that_is_not_an_architecture_fails_without_a_retry() -> None:
    outcome = ProxyEvaluator(SMOKE_DATA, ProxyConfig(steps=2, threads=1)).score({"lr": 0.1}, TrialContext((0,)))
    assert outcome.status is Status.FAILED and outcome.retryable is False
    assert outcome.reason == "TypeError: the proxy trainer needs an architecture space, got a dict"


def test_rmsprop_exponential_and_augmentation_run() -> None:
    data = SMOKE_DATA.replace(flip=True, crop_padding=2)
    config = ProxyConfig(steps=4, batch_size=32, optimizer="rmsprop", schedule="exponential", threads=1, channels_last=False)
    outcome = ProxyEvaluator(data, config).score(TINY, TrialContext(seed=0))
    assert outcome.status is Status.OK and outcome.metrics["steps"] == 4


def test_seconds_budget_stops() -> None:
    outcome = ProxyEvaluator(SMOKE_DATA, ProxyConfig(seconds=0.5, batch_size=32, threads=1)).score(TINY, TrialContext())
    assert outcome.status is Status.OK and outcome.metrics["steps"] >= 1


def test_config_validation() -> None:
    assert ProxyConfig().epochs == 5.0 and ProxyConfig(epochs=None).epochs == 5.0
    assert ProxyConfig(steps=500).epochs is None  # a step budget alone is not capped by the default epochs
    with pytest.raises(ConfigError, match="proxy: epochs: expected a number in \(0, 10000\] or null, got -1"):
        ProxyConfig(epochs=-1)
    with pytest.raises(ConfigError, match=r"exp.yaml: proxy.optimizer: expected one of \['sgd', 'rmsprop'\], got 'adam'"):
        ProxyConfig.from_dict({"optimizer": "adam"}, "exp.yaml: proxy")
    with pytest.raises(ConfigError, match=r"unknown keys \['epoch'\]"):
        ProxyConfig.from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match=r"e.yaml: budget.epochs: expected a number in \(0, 10000\] or null, got 1e\+308"):
        ProxyConfig.from_dict({"epochs": 1e308}, "e.yaml: budget")
    with pytest.raises(ConfigError, match=r"proxy: steps: expected an integer in 1..100000000 or null, got 2.5"):
        ProxyConfig(steps=2.5)
    with pytest.raises(ConfigError, match=r"proxy: seconds: expected a number in \(0, 604800\] or null, got inf"):
        ProxyConfig(seconds=float("inf"))
    assert ProxyConfig(epochs=0.5).epochs == 0.5  # fractions of an epoch are a budget too
    assert ProxyConfig.from_dict({"epochs": 2, "lr": 0.05}).peak_lr == 0.05


def test_schedule_and_seed_helpers() -> None:
    config = ProxyConfig(lr=1.0, warmup_epochs=1)
    lrs = [learning_rate(s, 100, 10, config) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and max(lrs) == pytest.approx(1.0)
    assert lrs[-1] < 0.01 and all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert trial_seed(0, "abc") == trial_seed(0, "abc") != trial_seed(1, "abc")


def test_rmsprop_tf_matches_its_formula() -> None:
    w = nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = RMSpropTF([w], lr=0.1, decay=0.9, momentum=0.5, eps=1e-3)
    w.grad = torch.tensor([0.5, 1.0])
    opt.step()
    ms = 0.9 + 0.1 * torch.tensor([0.25, 1.0])
    expected = torch.tensor([1.0, -2.0]) - 0.1 * torch.tensor([0.5, 1.0]) / torch.sqrt(ms + 1e-3)
    assert torch.allclose(w.detach(), expected)


def test_cli_json_is_one_document(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train-proxy", "--arch", "mixnet_tiny", "--data", "synthetic", "--resolution", "16", "--classes", "3",
                 "--images-per-class", "30", "--epochs", "2", "--batch-size", "16", "--threads", "1", "--json"])
    out, err = capsys.readouterr()
    document = json.loads(out)
    assert code == 0 and document["status"] == "ok" and document["error"] is None
    # the keys users read, as before the trainer returned a TrialOutcome
    assert set(document) == {
        "status", "top1", "top5", "loss", "train_loss", "epochs", "steps", "train_seconds", "eval_seconds",
        "images_per_second", "params", "macs", "stopped_early", "error", "seed", "arch_id", "device", "num_classes",
        "resolution", "train_images", "val_images", "arch", "data"}
    from mixnas.search_space.counting import count

    counts = count(TINY.replace(num_classes=3, resolution=16))  # as trained: the data's classes and resolution
    assert (document["params"], document["macs"]) == (counts.params, counts.macs)
    assert "epoch 1:" in err and "epoch 2:" in err


def test_cli_bad_data_is_one_line_error(capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    code = main(["train-proxy", "--arch", "mixnet_tiny", "--data", str(tmp_path / "missing"), "--json"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith("mixnas: error: ") and "missing: no such file or folder" in err


def test_cli_cuda_without_cuda_is_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code = main(["train-proxy", "--arch", "mixnet_tiny", "--data", "digits", "--device", "cuda"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.strip() == ("mixnas: error: --device: 'cuda' was asked for but torch sees no CUDA device on this "
                           "machine; use 'auto' (CUDA when available) or 'cpu'")


# ------------------------------------------------------------------------------------------ evaluations a trial does
def _count_evaluations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    from mixnas.evaluators import proxy

    calls: list[int] = []
    original = proxy._Trial._evaluate

    def counted(self: Any) -> None:
        calls.append(1)
        original(self)

    monkeypatch.setattr(proxy._Trial, "_evaluate", counted)
    return calls


def test_without_a_report_consumer_only_the_final_evaluation_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    config = ProxyConfig(epochs=3, batch_size=32, threads=1)
    evaluator = ProxyEvaluator(SMOKE_DATA, config)
    calls = _count_evaluations(monkeypatch)
    quiet = evaluator.score(TINY, TrialContext(seed=2)).metrics
    assert len(calls) == 1
    curve: list[dict[str, Any]] = []
    full = evaluator.score(TINY, TrialContext(seed=2, report=lambda epoch, m: curve.append({"epoch": epoch, **m})))
    assert len(calls) == 1 + 3 and [p["epoch"] for p in curve] == [1, 2, 3]
    final = {k: full.metrics[k] for k in ("top1", "top5", "loss", "train_loss", "steps", "epochs")}
    assert final == {k: quiet[k] for k in final}  # bit-identical final metrics with or without the reports
    assert {k: curve[-1][k] for k in final} == final


def test_a_search_trial_evaluates_per_epoch_only_for_a_scheduler(monkeypatch: pytest.MonkeyPatch) -> None:
    from mixnas.launch.config import config_from_dict
    from mixnas.launch.trial import TrialEvaluator

    cfg = config_from_dict({
        "name": "t", "search_space": "tiny", "seed": 0, "controller": {"type": "random"},
        "evaluator": {"type": "proxy", "data": "synthetic", "subset": {"images_per_class": 24, "classes": 3},
                      "budget": {"epochs": 3}, "training": {"batch_size": 16, "threads": 1}},
        "reward": {"type": "metric", "metric": "top1", "direction": "max"},
        "execution": {"trials": 1}, "logging": {"tensorboard": False},
    }, source="t.yaml")
    encoding = (0,) * len(TrialEvaluator(cfg).space.dimensions)
    calls = _count_evaluations(monkeypatch)
    plain = TrialEvaluator(cfg).run(encoding, 0)
    assert len(calls) == 1  # no scheduler: nothing consumes per-epoch reports
    assert [p["epoch"] for p in plain.curve] == [3]
    seen: list[int] = []
    asha = TrialEvaluator(cfg, should_stop=lambda trial, epoch, m: bool(seen.append(epoch))).run(encoding, 0)
    assert len(calls) == 1 + 3 and seen == [1, 2, 3]  # epochs 1 and 2, and the final one
    assert [p["epoch"] for p in asha.curve] == [1, 2, 3]  # two epochs, then the final evaluation, as before
    for key in ("top1", "top5", "loss", "train_loss", "steps"):
        assert plain.metrics[key] == asha.metrics[key], key
        assert plain.curve[-1][key] == asha.curve[-1][key], key
    assert plain.reward == asha.reward
    # a trial records every metric a config may name; params / MACs are the trial's own count of the candidate
    numeric = {k for k, v in plain.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    assert numeric == set(PROXY_METRICS)
    from mixnas.search_space.counting import count

    counts = count(TrialEvaluator(cfg).space.decode(encoding))
    assert (plain.metrics["params"], plain.metrics["macs"]) == (counts.params, counts.macs) and counts.params > 0
