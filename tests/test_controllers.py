"""Contract suite every controller passes, plus per-controller behaviour on tiny spaces with a known optimum.

The driver below keeps several suggestions out at once, tells them out of order and mixes in failed, pruned and
diverged (NaN) results; everything it decides depends only on the controller's pending ids, so a controller and
its restored copy can be driven identically (also in a fresh process, see ``fresh_process_continuations``).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mixnas.controllers import (
    CONTROLLERS,
    Controller,
    Objective,
    Result,
    make_controller,
    restore_controller,
)
from mixnas.controllers.evolution import crowding_distances, nondominated_ranks
from mixnas.errors import ControllerError
from mixnas.search_space.spaces import ChoiceSpace, Dimension

ACC = Objective("acc", "max")
COST = Objective("cost", "min")
OPTIMUM = (2, 0, 1, 2, 0)
# name -> (type, options, objectives); small settings so that a few dozen queries exercise every code path
CASES: dict[str, tuple[str, dict[str, Any], list[Objective]]] = {
    "random": ("random", {}, [ACC]),
    "evolution": ("evolution", {"population_size": 6, "sample_size": 3}, [ACC]),
    "evolution-2obj": ("evolution", {"population_size": 6, "sample_size": 3}, [ACC, COST]),
    "evolution-screen": ("evolution", {"population_size": 6, "sample_size": 3, "screen": 8}, [ACC]),
    "evolution-screen-2obj": ("evolution", {"population_size": 6, "sample_size": 3, "screen": 8}, [ACC, COST]),
    "rl": ("rl", {"hidden_size": 8, "batch_size": 3, "lr": 0.05}, [ACC]),
    "optuna-tpe": ("optuna", {"sampler": "tpe", "sampler_kwargs": {"n_startup_trials": 5}}, [ACC]),
    "optuna-nsga2": ("optuna", {"sampler": "nsga2", "sampler_kwargs": {"population_size": 6}}, [ACC, COST]),
    "guided": ("guided", {"n_initial": 4, "candidates": 30}, [ACC]),
    "guided-2obj": ("guided", {"n_initial": 4, "candidates": 30, "acquisition": "ucb"}, [ACC, COST]),
    "guided-ensemble": ("guided", {"n_initial": 4, "candidates": 30, "model": "ensemble", "acquisition": "thompson"},
                        [ACC]),
}
SEARCHERS = ["evolution", "evolution-screen", "rl", "optuna-tpe", "guided"]


def toy_space() -> ChoiceSpace:
    """5 dimensions x 3 choices (243 encodings); the optimum of ``toy_values`` is ``OPTIMUM``."""
    return ChoiceSpace([Dimension(f"d{i}", (0, 1, 2)) for i in range(5)], name="toy")


def tiny_space() -> ChoiceSpace:
    """6 encodings, to exhaust."""
    return ChoiceSpace([Dimension("a", (0, 1, 2)), Dimension("b", ("x", "y"))], name="tiny")


def toy_values(encoding: tuple[int, ...]) -> dict[str, float]:
    """Separable: one point per dimension at its optimal choice, half a point one step away; cost = sum."""
    acc = sum(1.0 if c == o else 0.5 if abs(c - o) == 1 else 0.0 for c, o in zip(encoding, OPTIMUM))
    return {"acc": acc, "cost": float(sum(encoding)), "extra": 1.0}


def result_for(suggestion_id: str, encoding: tuple[int, ...]) -> Result:
    """Mostly ok; some failed, pruned (with and without values) and diverged, chosen by id."""
    n = int(suggestion_id)
    values = toy_values(encoding)
    if n % 7 == 3:
        return Result("failed", reason="out of memory")
    if n % 11 == 5:
        return Result("pruned", {k: v / 2 for k, v in values.items()}, reason="early stopped")
    if n % 11 == 9:
        return Result("pruned")
    if n % 13 == 6:
        return Result("ok", {**values, "acc": math.nan})
    return Result("ok", values)


def drive(controller: Controller, steps: int, *, width: int = 3) -> list[tuple[int, ...]]:
    """Ask while fewer than ``width`` are out (and on two steps of three); tell the middle pending id otherwise."""
    asked = []
    for step in range(steps):
        pending = controller.pending
        if len(pending) >= width or (pending and step % 3 == 2):
            ids = sorted(pending)
            sid = ids[len(ids) // 2]
            controller.tell(sid, result_for(sid, pending[sid]))
        else:
            asked.append(controller.ask().encoding)
    return asked


def build(case: str, space: ChoiceSpace | None = None, seed: int = 0) -> Controller:
    kind, options, objectives = CASES[case]
    return make_controller(kind, space or toy_space(), objectives=objectives, seed=seed, **options)


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> str:
    return request.param


# ---------------------------------------------------------------------------------------------- contract suite


def test_suggestions_lie_in_the_space(case: str) -> None:
    space = toy_space()
    controller = build(case, space)
    for encoding in drive(controller, 40):
        assert space.validate_encoding(encoding) == encoding
        assert all(isinstance(i, int) for i in encoding)


def test_ask_and_tell_interleave_with_several_pending(case: str) -> None:
    controller = build(case)
    first = [controller.ask() for _ in range(4)]
    assert len({s.id for s in first}) == 4 and set(controller.pending) == {s.id for s in first}
    controller.tell(first[2].id, Result("ok", toy_values(first[2].encoding)))
    later = controller.ask()
    for s in (first[0], later, first[3], first[1]):
        controller.tell(s.id, Result("ok", toy_values(s.encoding)))
    assert controller.pending == {} and controller.n_told == 5


def test_unknown_and_repeated_ids_raise(case: str) -> None:
    controller = build(case)
    s = controller.ask()
    with pytest.raises(ControllerError, match="unknown suggestion id 'nope'"):
        controller.tell("nope", Result("ok", toy_values(s.encoding)))
    controller.tell(s.id, Result("ok", toy_values(s.encoding)))
    with pytest.raises(ControllerError, match="told already"):
        controller.tell(s.id, Result("ok", toy_values(s.encoding)))
    s2 = controller.ask()
    with pytest.raises(ControllerError, match="lacks objective"):
        controller.tell(s2.id, Result("ok", {"other": 1.0}))
    assert s2.id in controller.pending  # a rejected tell leaves the suggestion pending


def test_failed_pruned_and_diverged_results_are_survived(case: str) -> None:
    controller = build(case)
    for _ in range(30):
        s = controller.ask()
        status = int(s.id) % 4
        if status == 0:
            controller.tell(s.id, Result("failed", reason="crash"))
        elif status == 1:
            controller.tell(s.id, Result("pruned"))
        elif status == 2:
            controller.tell(s.id, Result("ok", {"acc": math.inf, "cost": math.nan}))
        elif int(s.id) % 8 == 3:
            controller.tell(s.id, Result("pruned", {"acc": math.nan, "cost": 1.0}))
        else:
            controller.tell(s.id, Result("pruned", {"acc": 0.1, "cost": 1.0}))
    assert controller.n_told == 30 and len(drive(controller, 10)) > 0
    json.dumps(controller.state_dict(), allow_nan=False)  # no NaN reached the controller's memory


def test_same_seed_same_sequence(case: str) -> None:
    first = drive(build(case, seed=3), 45)
    assert drive(build(case, seed=3), 45) == first
    assert drive(build(case, seed=4), 45) != first


def test_state_dict_is_json_and_round_trips(case: str) -> None:
    controller = build(case)
    drive(controller, 20)
    state = controller.state_dict()
    assert state["format_version"] == 1 and state["type"] == CASES[case][0]
    assert json.loads(json.dumps(state, allow_nan=False)) == state


def test_exact_resume_in_process_with_pending(case: str) -> None:
    original = build(case)
    drive(original, 25)
    assert original.pending, "the driver should leave suggestions pending"
    restored = restore_controller(json.loads(json.dumps(original.state_dict())), toy_space())
    assert restored.pending == original.pending
    assert drive(restored, 30) == drive(original, 30)


def test_exact_resume_in_a_fresh_process(case: str, fresh_process_continuations: dict[str, Any]) -> None:
    expected, got = fresh_process_continuations[case]
    assert got == expected


def test_no_duplicates_until_the_space_is_exhausted(case: str) -> None:
    space = tiny_space()
    controller = build(case, space)
    seen = []
    for _ in range(space.cardinality):
        s = controller.ask()
        seen.append(s.encoding)
        if int(s.id) % 2:  # half of them stay pending
            controller.tell(s.id, Result("ok", {"acc": float(s.encoding[0]), "cost": float(s.encoding[1])}))
    assert len(set(seen)) == space.cardinality
    assert controller.ask().encoding in seen  # exhausted: repeats are allowed again


def test_duplicates_are_allowed_when_asked_for(case: str) -> None:
    kind, options, objectives = CASES[case]
    controller = make_controller(kind, tiny_space(), objectives=objectives, avoid_duplicates=False, **options)
    encodings = [controller.ask().encoding for _ in range(20)]
    assert len(set(encodings)) < len(encodings)


def test_state_of_another_configuration_is_refused(case: str) -> None:
    state = build(case).state_dict()
    other_kind = "evolution" if CASES[case][0] == "random" else "random"
    other = make_controller(other_kind, toy_space(), objectives=CASES[case][2])
    with pytest.raises(ControllerError, match="type"):
        other.load_state_dict(state)
    wrong_space = build(case, tiny_space())
    with pytest.raises(ControllerError, match="space sizes"):
        wrong_space.load_state_dict(state)
    with pytest.raises(ControllerError, match="format_version"):
        build(case).load_state_dict({**state, "format_version": 99})


# ------------------------------------------------------------------------------------------ fresh process resume

_CHILD = """
import json, sys
sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads(1)
import test_controllers as t
from mixnas.controllers import restore_controller
states = json.load(open({path!r}))
out = {{}}
for case, state in states.items():
    out[case] = [list(e) for e in t.drive(restore_controller(state, t.toy_space()), 30)]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def fresh_process_continuations(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """For every case: (continuation of the original, continuation of its state restored in a new interpreter)."""
    states, expected = {}, {}
    for name in CASES:
        controller = build(name)
        drive(controller, 25)
        states[name] = controller.state_dict()
        expected[name] = [list(e) for e in drive(controller, 30)]
    path = tmp_path_factory.mktemp("states") / "states.json"
    path.write_text(json.dumps(states))
    code = _CHILD.format(tests=str(Path(__file__).parent), path=str(path))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    return {name: (expected[name], got[name]) for name in CASES}


# ----------------------------------------------------------------------------------------- finding the optimum


@pytest.mark.parametrize("name", SEARCHERS)
def test_searchers_find_the_optimum_of_a_separable_toy(name: str) -> None:
    kind, options, _ = CASES[name]
    controller = make_controller(kind, toy_space(), objectives=[ACC], seed=0, **options)
    for n in range(80):  # random search finds the optimum of 243 within 80 queries with probability ~0.33
        s = controller.ask()
        if s.encoding == OPTIMUM:
            return
        controller.tell(s.id, Result("ok", toy_values(s.encoding)))
    pytest.fail(f"{name} did not find {OPTIMUM} in 80 queries")


def test_multi_objective_evolution_keeps_the_pareto_front_as_parents() -> None:
    controller = build("evolution-2obj")
    for _ in range(60):
        s = controller.ask()
        controller.tell(s.id, Result("ok", toy_values(s.encoding)))
    points = [fitness for _, fitness in controller.population]
    assert len(points) == 6 and all(fitness[1] <= 0 for fitness in points)  # cost minimised -> negated


def test_nondominated_ranks_and_crowding() -> None:
    points = [(3.0, 1.0), (1.0, 3.0), (2.0, 2.0), (1.0, 1.0), (0.0, 0.0)]
    ranks = nondominated_ranks(points)
    assert ranks == [0, 0, 0, 1, 2]
    crowding = crowding_distances(points, ranks)
    assert crowding[0] == crowding[1] == math.inf and crowding[2] == pytest.approx(2.0)


# ------------------------------------------------------------------------------------ factory and option checks


def test_unknown_controller_lists_the_valid_names() -> None:
    with pytest.raises(ControllerError, match=r"unknown controller 'ppo'; valid: \['evolution', 'guided', 'optuna'"):
        make_controller("ppo", toy_space())
    assert sorted(CONTROLLERS) == ["evolution", "guided", "optuna", "random", "rl"]


@pytest.mark.parametrize(
    ("kind", "options", "message"),
    [
        ("evolution", {"popsize": 3}, r"unknown option\(s\) \['popsize'\]; valid options: .*population_size"),
        ("evolution", {"population_size": 1}, r"option population_size must be an integer in 2..100000, got 1"),
        ("evolution", {"population_size": 10**30}, r"option population_size must be an integer in 2..100000"),
        ("evolution", {"population_size": 4, "sample_size": 5}, "option sample_size must be at most"),
        ("evolution", {"mutations": 6}, r"option mutations must be an integer in 1..5"),
        ("rl", {"lr": -1.0}, r"option lr must be a number in \(0, 10\], got -1.0"),
        ("rl", {"lr": float("nan")}, r"option lr must be a number in \(0, 10\]"),
        ("rl", {"hidden_size": 10**8}, r"option hidden_size must be an integer in 1..4096"),
        ("rl", {"ppo_epochs": 10**9}, r"option ppo_epochs must be an integer in 1..1000"),
        ("rl", {"entropy_weight": 1e308}, r"option entropy_weight must be a number in \[0, 100\]"),
        ("rl", {"batch_size": 0}, "option batch_size"),
        ("optuna", {"sampler": "hyperband"}, r"option sampler: unknown sampler 'hyperband'; valid: .*tpe"),
        ("optuna", {"sampler_kwargs": {"seed": 1}}, "sampler_kwargs.seed"),
        ("optuna", {"sampler_kwargs": {"n_startup": 1}}, "option sampler_kwargs: TPESampler"),
        ("random", {"avoid_duplicates": "yes"}, "option avoid_duplicates"),
        ("guided", {"n_initial": 1}, r"guided: option n_initial must be an integer in 2..100000, got 1"),
        ("guided", {"candidates": 10**6}, r"option candidates must be an integer in 1..10000"),
        ("guided", {"random_fraction": 1.5}, r"option random_fraction must be a number in \[0, 1\], got 1.5"),
        ("guided", {"top_k": 0}, r"option top_k must be an integer in 1..100000"),
        ("guided", {"mutations": 2.5}, r"option mutations must be an integer in 1..1000"),
        ("guided", {"beta": -1.0}, r"option beta must be a number in \[0, 100\]"),
        ("guided", {"max_points": 10**5}, r"option max_points must be an integer in 2..5000"),
        ("guided", {"acquisition": "pi"}, r"option acquisition must be one of \['ei', 'ucb', 'thompson'\], got 'pi'"),
        ("guided", {"model": "mlp"}, r"option model must be one of \['gp', 'ensemble'\], got 'mlp'"),
    ],
)
def test_bad_options_name_the_option(kind: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ControllerError, match=message):
        make_controller(kind, toy_space(), **options)


def test_objectives_default_to_a_scalar_reward_and_are_validated() -> None:
    controller = make_controller("random", toy_space())
    assert controller.objectives == (Objective("reward", "max"),)
    with pytest.raises(ControllerError, match="direction must be one of"):
        Objective("acc", "maximise")
    with pytest.raises(ControllerError, match="unique"):
        make_controller("random", toy_space(), objectives=["acc", ("acc", "min")])
    with pytest.raises(ControllerError, match="status must be one of"):
        Result("done", {"acc": 1.0})


def test_rl_needs_weights_for_several_objectives() -> None:
    with pytest.raises(ControllerError, match="option weights is needed"):
        make_controller("rl", toy_space(), objectives=[ACC, COST])
    controller = make_controller("rl", toy_space(), objectives=[ACC, COST], weights={"acc": 1.0, "cost": 0.1})
    assert controller.reward((3.0, 2.0)) == pytest.approx(2.8)


def test_optuna_resumes_from_a_sqlite_storage(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"

    def controller(study_name: str) -> Controller:
        options = {"storage": url, "study_name": study_name, "sampler": "tpe"}
        options["sampler_kwargs"] = {"n_startup_trials": 4}
        return make_controller("optuna", toy_space(), objectives=[ACC], **options)

    original = controller("a")
    drive(original, 12)
    assert original.state_dict()["controller"]["study"] is None  # the storage holds the trials
    expected = drive(original, 8)
    # study "a" moved on with the original: replay the same history into study "b", save there and resume
    replay = controller("b")
    drive(replay, 12)
    state = json.loads(json.dumps(replay.state_dict()))
    resumed = controller("b")
    resumed.load_state_dict(state)
    assert resumed.pending == replay.pending
    assert drive(resumed, 8) == expected


def test_optuna_sqlite_resume_after_a_tell_that_was_never_saved(tmp_path: Path) -> None:
    # The driver saves the controller state after each tell; if it dies between the storage's commit of a tell
    # and that save, the restored state still has the trial pending. Telling it again must not fail or reach the
    # study twice, and the resumed controller must go on exactly as an uninterrupted one.
    def controller(study_name: str) -> Controller:
        options = {"storage": f"sqlite:///{tmp_path / 'optuna.db'}", "study_name": study_name, "sampler": "tpe"}
        options["sampler_kwargs"] = {"n_startup_trials": 4}
        return make_controller("optuna", toy_space(), objectives=[ACC], **options)

    uninterrupted = controller("a")
    drive(uninterrupted, 9)
    sid = sorted(uninterrupted.pending)[0]
    uninterrupted.tell(sid, result_for(sid, uninterrupted.pending[sid]))
    expected = drive(uninterrupted, 8)

    killed = controller("b")
    drive(killed, 9)
    state = json.loads(json.dumps(killed.state_dict()))  # last save before the kill
    sid = sorted(killed.pending)[0]
    killed.tell(sid, result_for(sid, killed.pending[sid]))  # reaches the storage, the state is never saved

    resumed = controller("b")
    resumed.load_state_dict(state)
    assert sid in resumed.pending
    resumed.tell(sid, result_for(sid, resumed.pending[sid]))  # the driver re-tells it from its ledger
    assert drive(resumed, 8) == expected
    finished = [t for t in resumed.study.get_trials(deepcopy=False) if t.state.is_finished()]
    assert len({t.number for t in finished}) == len(finished)


def _asks_and_tells(controller: Controller, n: int) -> list[tuple[int, ...]]:
    """``n`` sequential ask / tell rounds with the toy values."""
    asked = []
    for _ in range(n):
        s = controller.ask()
        controller.tell(s.id, Result("ok", toy_values(s.encoding)))
        asked.append(s.encoding)
    return asked


@pytest.mark.parametrize("objectives", [[ACC], [ACC, COST]], ids=["single", "multi"])
def test_optuna_duplicates_do_not_pile_up_as_trials(objectives: list[Objective]) -> None:
    # 81 encodings and 200 asks: TPE repeats itself often before the space is exhausted, and always after.
    space = ChoiceSpace([Dimension(f"d{i}", (0, 1, 2)) for i in range(4)], name="small")
    controller = make_controller("optuna", space, objectives=objectives, seed=0, sampler="tpe")
    asked = _asks_and_tells(controller, 200)
    assert len(set(asked[:81])) == 81  # still no repeat until every encoding has been seen
    trials = controller.study.get_trials(deepcopy=False)
    assert len(trials) == 200  # one trial per evaluation, none for rejected duplicates
    assert [tuple(t.params[d.name] for d in space.dimensions) for t in trials] == asked


def test_optuna_trial_count_survives_a_resume() -> None:
    space = ChoiceSpace([Dimension(f"d{i}", (0, 1, 2)) for i in range(3)], name="small")
    original = make_controller("optuna", space, objectives=[ACC, COST], seed=3, sampler="tpe")
    _asks_and_tells(original, 20)
    resumed = make_controller("optuna", space, objectives=[ACC, COST], seed=3, sampler="tpe")
    resumed.load_state_dict(json.loads(json.dumps(original.state_dict())))
    assert _asks_and_tells(resumed, 30) == _asks_and_tells(original, 30)
    assert len(resumed.study.get_trials(deepcopy=False)) == 50


def test_optuna_qmc_depends_on_the_seed() -> None:
    def proposals(seed: int, **options: Any) -> list[tuple[int, ...]]:
        controller = make_controller("optuna", toy_space(), objectives=[ACC], seed=seed, sampler="qmc", **options)
        return _asks_and_tells(controller, 12)

    assert proposals(0) == proposals(0)
    assert proposals(0)[1:] != proposals(1)[1:]  # beyond the first (random) trial: the scrambled sequences differ
    # Optuna's own default (no scrambling) is one sequence for every seed after the random first trial
    assert proposals(0, sampler_kwargs={"scramble": False})[1:] == proposals(1, sampler_kwargs={"scramble": False})[1:]


def test_optuna_bruteforce_exhausts_a_space_without_an_error() -> None:
    # BruteForceSampler calls study.stop() once every point was tried; with ask / tell Optuna raises for that.
    controller = make_controller("optuna", tiny_space(), objectives=[ACC], sampler="bruteforce")
    asked = []
    for _ in range(8):
        suggestion = controller.ask()
        asked.append(suggestion.encoding)
        controller.tell(suggestion.id, Result("ok", {"acc": float(sum(suggestion.encoding))}))
    assert len(set(asked[:6])) == 6  # every point once, then repeats
    assert sum(t.state.name == "COMPLETE" for t in controller.study.get_trials()) == 8


def test_the_docs_give_every_controller_option_its_range() -> None:
    from pathlib import Path

    from mixnas.controllers.registry import controller_class

    docs = (Path(__file__).resolve().parents[1] / "docs" / "controllers.md").read_text()
    for name in CONTROLLERS:
        for option, rng in controller_class(name).option_ranges.items():
            assert f"`{option}`" in docs and rng.describe() in docs, (name, option, rng.describe())
