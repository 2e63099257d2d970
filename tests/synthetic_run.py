"""A run directory made by hand, without training: real ledger rows of real architectures of a space, a real
latency lookup table holding their signatures, and made-up accuracies.

For the report's tests (a run still going: ``running`` trials) and ``benchmarks/report_render.py`` (300 trials).
Everything the report reads is real: the config through ``config_from_dict``, the ledger through ``Ledger``,
params and MACs counted, ``latency_ms`` the table's prediction; only ``top1`` and the timings are invented.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from mixnas.evaluators.latency.lut import Calibration, Entry, LatencyTable, lut_sum
from mixnas.evaluators.latency.signatures import arch_parts, arch_signatures
from mixnas.launch.config import config_from_dict
from mixnas.launch.ledger import COPIED, SCREENED, Ledger
from mixnas.outcome import Status, TrialOutcome
from mixnas.search_space.arch_strings import encode_arch
from mixnas.search_space.counting import count
from mixnas.search_space.presets import load_arch_preset
from mixnas.search_space.spaces import load_space

PRESET = "mixnet_tiny"  # a member of the tiny space, so the table covers it and the report shows it


def _part_ms(part: Any) -> float:
    """A made-up but plausible cost of one part: a constant plus work proportional to its multiply-adds."""
    layer = getattr(part, "layer", None)
    if layer is None:
        return 0.004 + 1e-7 * math.prod(part.input_shape(1))
    size = layer.output_size ** 2
    pointwise = (layer.in_channels * layer.mid_channels + layer.mid_channels * layer.out_channels) * size
    depthwise = sum(c * k * k for c, k in zip(layer.dw_splits, layer.kernel_sizes)) * size
    return 0.003 + 2e-8 * pointwise + 6e-8 * depthwise + 1e-6 * layer.se_channels


def make_table(archs: list[Any], path: Path) -> LatencyTable:
    """A table holding every part of ``archs`` (and of :data:`PRESET`), calibrated, saved at ``path``."""
    entries = {}
    for arch in [*archs, load_arch_preset(PRESET)]:
        for part in arch_parts(arch):
            ms = _part_ms(part)
            entries[part.signature] = Entry(ms=ms, mean_ms=ms * 1.02, std_ms=ms * 0.03, count=100)
    table = LatencyTable(backend="onnxruntime", threads=1, batch_size=1,
                         device={"cpu": "synthetic CPU", "accelerator": "cpu"}, entries=entries,
                         calibration=Calibration(scale=1.04, offset_ms=0.002, model="scale+offset",
                                                 loo_rmspe_pct=3.1))
    table.save(path)
    return table


LIMIT = 200_000  # constraints.max_params: about one sampled tiny network in twelve is over it (screened)


def _sample(space: Any, rng: np.random.Generator, trials: int, running: int) -> list[tuple[tuple[int, ...], Any]]:
    """Distinct (encoding, architecture) pairs: ``trials`` + ``running`` within :data:`LIMIT`, with the ones over
    it that the sampler met on the way (the screened ones) in between; the running ones last."""
    seen: set[tuple[int, ...]] = set()
    out, within = [], 0
    while within < trials + running:
        enc = tuple(int(i) for i in space.sample(rng))
        if enc in seen:
            continue
        seen.add(enc)
        arch = space.decode(enc)
        over = count(arch).params > LIMIT
        if over and within >= trials:
            continue  # running trials are trained ones
        within += not over
        out.append((enc, arch))
    return out


def make_run(folder: Path, *, trials: int, running: int = 0, seed: int = 0, repeats: int = 3) -> Path:
    """A run of the ``tiny`` space with ``trials`` finished trainings (mostly ok; some failed, pruned; screened
    and copied candidates besides) and ``running`` more still running; the ``repeats`` best were re-ranked with
    two more seeds. Returns the run directory."""
    rng = np.random.default_rng(seed)
    candidates = _sample(load_space("tiny"), rng, trials, running)
    table = make_table([a for _, a in candidates], folder / "table.json")
    cfg = config_from_dict({
        "name": "synthetic", "description": f"{trials} made-up trainings in the tiny space", "search_space": "tiny",
        "controller": {"type": "evolution", "options": {"population_size": 20, "sample_size": 5}},
        "evaluator": {"type": "proxy", "data": "digits", "budget": {"epochs": 4}},
        "latency": {"type": "lut", "lut": str(folder / "table.json")},
        "reward": {"type": "mnasnet", "mode": "soft", "accuracy": "top1", "cost": "latency_ms", "target": 0.2},
        "constraints": {"max_params": LIMIT},
        "execution": {"trials": trials + running, "max_concurrent": 2},
        "logging": {"tensorboard": False},
    }, source="synthetic.yaml", base_dir=folder)
    run_dir = folder / "run"
    run_dir.mkdir(exist_ok=True)
    (run_dir / "config.yaml").write_text(cfg.to_yaml())
    start = time.time()  # finish times are spread 5 s apart after it (in the future: created_at is now)
    done = 0
    ok: list[tuple[float, int]] = []
    trial = -1
    with Ledger(run_dir / "ledger.sqlite") as ledger:
        for enc, arch in candidates:
            trial += 1
            c = count(arch)
            latency = lut_sum(table, arch_signatures(arch))[0]
            row = dict(suggestion_id=f"{trial:06d}", encoding=enc, arch_id=arch.id,
                       block_strings=encode_arch(arch, "tf"), candidate=arch.to_dict())
            metrics: dict[str, Any] = {"params": c.params, "macs": c.macs, "latency_ms": latency}
            if c.params > LIMIT:
                outcome = TrialOutcome.failure(f"params {c.params:,} > max {LIMIT:,}", status=Status.INFEASIBLE,
                                               metrics=metrics, retryable=False)
                ledger.add_trial(trial, **row, origin=SCREENED, outcome=outcome)
                continue
            if done >= trials:
                ledger.add_trial(trial, **row)
                continue
            done += 1
            top1 = min(0.995, 0.9 + 0.08 * (1 - math.exp(-c.params / 80_000)) + rng.normal(0, 0.006))
            metrics.update(top1=top1, top5=1.0, loss=1.0 - top1)
            if done % 17 == 5:
                outcome = TrialOutcome.failure("RuntimeError: CUDA error: an illegal memory access (made up)",
                                               attempt=1)
            elif done % 19 == 7:
                outcome = TrialOutcome(Status.PRUNED, metrics, reason="stopped early by ASHA at epoch 1 (made up)")
            else:
                outcome = TrialOutcome(Status.OK, metrics, top1 * (latency / 0.2) ** -0.07, eval_seconds=8.0)
                ok.append((outcome.reward, trial))
            ledger.add_trial(trial, **row)
            if outcome.status is Status.FAILED:
                ledger.record_failure(trial, attempt=1, reason="RuntimeError: worker lost (made up)")
            ledger.finish_trial(trial, outcome, finished_at=start + 5.0 * (trial + 1))
            if done % 23 == 11:  # the controller proposed this architecture again: a copy, not trained again
                trial += 1
                ledger.add_trial(trial, **{**row, "suggestion_id": f"{trial:06d}"}, origin=COPIED,
                                 copy_of=trial - 1, outcome=ledger.get(trial - 1).outcome)
        for _, trial in sorted(ok, reverse=True)[:repeats]:
            record = ledger.get(trial)
            for repeat in (1, 2):
                m = dict(record.metrics)
                m["top1"] = min(0.999, m["top1"] + rng.normal(0, 0.004))
                reward = m["top1"] * (m["latency_ms"] / 0.2) ** -0.07
                ledger.add_repeat(trial, repeat, repeat, TrialOutcome(Status.OK, m, reward))
        if not running:
            ledger.set_meta("finished_at", str(time.time()))
    return run_dir
