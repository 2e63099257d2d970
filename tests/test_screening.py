"""No training wasted (issue 31, parts 1 and 2): a candidate over a hard limit is screened out before training and
does not count against the trial budget; a candidate whose architecture was already trained gets that trial's result
again and is not trained twice; what a controller was shown before training is stored with the ask.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from mixnas.controllers.base import Known
from mixnas.launch.config import config_from_dict
from mixnas.launch.known import KnownCosts
from mixnas.launch.ledger import COPIED, SCREENED, TRAINED, Ledger
from mixnas.search_space.counting import count
from mixnas.search_space.spaces import load_space

REPO = Path(__file__).resolve().parents[1]
OLD = REPO / "tests" / "data" / "old_formats"


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "mixnas", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env=env)
    assert proc.returncode == 0, f"mixnas {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _records(run_dir: Path):
    with Ledger(run_dir / "ledger.sqlite", readonly=True) as ledger:
        return ledger.trials(), ledger.journal(), ledger.known()


def _median_params(space_name: str, n: int = 200) -> int:
    space = load_space(space_name)
    rng = np.random.default_rng(0)
    return int(np.median([count(space.decode(space.sample(rng))).params for _ in range(n)]))


def test_a_candidate_over_a_hard_limit_is_never_trained_and_does_not_count(tmp_path, ray_address):
    limit = _median_params("tiny")  # about half of the random proposals are over it
    run_dir = tmp_path / "run"
    sets = [f"execution.address={ray_address}", "execution.trials=4", "execution.max_concurrent=2",
            "controller={type: random}", f"constraints.max_params={limit}", "evaluator.budget={steps: 3}",
            "evaluator.subset.images_per_class=10", "logging.tensorboard=false"]
    _cli("search", str(REPO / "experiments" / "quickstart.yaml"), "--output", str(run_dir), "-q",
         *[x for s in sets for x in ("--set", s)])
    rows, journal, known = _records(run_dir)
    trained = [r for r in rows if r.origin == TRAINED]
    assert len(trained) == 4 and len(rows) == 4 + sum(r.origin == SCREENED for r in rows)
    for r in trained:  # every training was of a candidate within the limit
        assert r.status == "ok" and r.metrics["params"] <= limit and r.worker
        assert known[r.encoding]["metrics"]["params"] == r.metrics["params"] and "screened" not in known[r.encoding]
    # the controller was shown candidates over the limit, as over it, and did not propose them
    refused = [e for e, k in known.items() if k.get("screened")]
    assert refused and all(k["metrics"]["params"] > limit for e, k in known.items() if e in refused)
    assert not set(refused) & {r.encoding for r in trained}
    assert sorted(t for e, t in journal if e == "ask") == sorted(t for e, t in journal if e == "tell") == \
        [r.trial for r in rows]
    status = json.loads(_cli("status", str(run_dir), "--json").stdout)
    assert status["state"] == "finished" and status["done"] == 4


def test_a_search_where_everything_is_over_the_limit_trains_nothing_and_stops(tmp_path, ray_address):
    """The controller's last resort (a random pick) is still screened out by the driver, never trained; after
    UNTRAINED_STREAK proposals in a row that need no training the search stops asking."""
    from mixnas.launch.runner import UNTRAINED_STREAK

    run_dir = tmp_path / "run"
    sets = [f"execution.address={ray_address}", "execution.trials=4", "controller={type: random, options: "
            "{max_retries: 0}}", "constraints.max_params=1000", "logging.tensorboard=false"]
    proc = subprocess.run([sys.executable, "-m", "mixnas", "search", str(REPO / "experiments" / "quickstart.yaml"),
                           "--output", str(run_dir), "-q", *[x for s in sets for x in ("--set", s)]],
                          capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1, proc.stderr[-2000:]  # the search ran and found nothing
    assert f"{UNTRAINED_STREAK} screened out before training" in proc.stdout, proc.stdout
    rows, journal, _ = _records(run_dir)
    assert len(rows) == UNTRAINED_STREAK and all(r.origin == SCREENED for r in rows)
    assert all(r.worker is None and r.reason.startswith("screened before training: params") for r in rows)
    status = json.loads(_cli("status", str(run_dir), "--json").stdout)
    assert status["state"] == "finished" and status["screened"] == UNTRAINED_STREAK and status["done"] == 0
    assert _cli("resume", str(run_dir), "-q").stdout.startswith(f"run {run_dir} is already finished")


def _macro3(tmp_path: Path, ray_address: str, **controller) -> Path:
    data = yaml.safe_load((OLD / "macro3.yaml").read_text())
    shutil.copy(OLD / "macro3.json", tmp_path / "macro3.json")
    data["evaluator"]["table"] = str(tmp_path / "macro3.json")
    data["controller"] = controller
    data["execution"].update(trials=12, address=ray_address)
    path = tmp_path / "macro3.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_an_architecture_is_trained_once_and_its_repeats_are_told_its_result(tmp_path, ray_address):
    # random search allowed to repeat itself on 27 architectures: 12 trainings need about 16 proposals
    config = _macro3(tmp_path, ray_address, type="random", options={"avoid_duplicates": False})
    run_dir = tmp_path / "run"
    proc = _cli("search", str(config), "--output", str(run_dir), "-q")
    rows, journal, _ = _records(run_dir)
    trained = [r for r in rows if r.trained]
    copies = [r for r in rows if r.origin == COPIED]
    assert len(trained) == 12 and len({r.encoding for r in trained}) == 12  # twelve different networks
    assert copies, "the seeded random search repeats an architecture within 12 trainings"
    by_trial = {r.trial: r for r in rows}
    for c in copies:
        original = by_trial[c.copy_of]
        assert original.trained and original.encoding == c.encoding and original.trial < c.trial
        assert (c.status, dict(c.metrics), c.reward) == (original.status, dict(original.metrics), original.reward)
        assert c.reason == f"copy of trial {original.trial}" and c.worker is None
    assert [t for e, t in journal if e == "tell"] == [r.trial for r in rows]  # deterministic: told in order
    assert f"{len(copies)} repeats of a trained architecture" in proc.stdout
    status = json.loads(_cli("status", str(run_dir), "--json").stdout)
    assert status["copied"] == len(copies) and status["done"] == 12
    assert len({tuple(t["encoding"]) for t in status["top"]}) == len(status["top"])  # each architecture once


def test_what_a_controller_was_shown_is_given_again_as_stored(tmp_path):
    """A resume shows the controller the stored answer, even where the table would now answer otherwise."""
    cfg = config_from_dict(yaml.safe_load((REPO / "experiments" / "quickstart.yaml").read_text()),
                           source="quickstart.yaml", base_dir=REPO)
    space = load_space("tiny")
    encoding = space.sample(np.random.default_rng(1))
    fresh = KnownCosts(cfg, space)
    answer = fresh(encoding)
    assert answer.metrics["params"] == count(space.decode(encoding)).params
    assert fresh.take_fresh() == {encoding: answer.to_dict()} and fresh.take_fresh() == {}
    stored = {encoding: Known({"params": 1.0, "macs": 2.0, "latency_ms": 3.0}, {"reward": 0.5}).to_dict()}
    replayed = KnownCosts(cfg, space, stored)
    assert replayed(encoding) == Known({"params": 1.0, "macs": 2.0, "latency_ms": 3.0}, {"reward": 0.5})
    assert replayed.take_fresh() == {}  # nothing new to store


def test_a_search_with_copies_killed_and_resumed_from_the_ledger_alone_equals_the_uninterrupted_one(
        tmp_path, ray_address):
    import random
    import signal

    from ledger_watch import kill_when

    config = _macro3(tmp_path, ray_address, type="random", options={"avoid_duplicates": False})
    reference = tmp_path / "reference"
    _cli("search", str(config), "--output", str(reference), "-q")
    seed = random.randrange(10**6)
    target = random.Random(seed).randrange(3, 10)
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "mixnas", "search", str(config), "--output", str(run_dir), "-q"],
                            cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    kill_when(proc, run_dir / "ledger.sqlite", target)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    (run_dir / "controller.json").unlink(missing_ok=True)
    _cli("resume", str(run_dir), "-q")

    def essence(rows):
        return [(r.trial, r.encoding, r.origin, r.copy_of, r.status, dict(r.metrics)) for r in rows]

    assert essence(_records(run_dir)[0]) == essence(_records(reference)[0]), f"random seed {seed}"
