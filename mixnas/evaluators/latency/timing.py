"""The measurement rules every mixnas latency measurement follows, in one module of the standard library only.

Warm-up, interleaved rounds over a minimum time span, the thread-CPU or wall clock, the summary statistics and the
statistic of the even and the odd rounds (``halves``), and every measurement in a process of its own
(:func:`in_fresh_process`). Local measurement (:mod:`.measure`, with any backend of
:mod:`.backends`), the latency agent on a device (:mod:`.agent`) and the offline runner therefore time models by
the same code: ``mixnas latency agent-script`` writes this module and the agent into one file for the device.

It imports only the standard library (numpy inside :func:`random_input`), and nothing of mixnas.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterator, Mapping, Sequence

CLOCKS = ("auto", "wall", "thread")
STATISTICS = ("min", "p10", "median", "mean")

Stage = Callable[[Any], Any]
Runner = Callable[[], None]
TimedRuns = Callable[[int, "int | None"], None]
"""``timed(n, k)``: run a network ``n`` times, keeping the timings as round ``k``'s (``k`` None: untimed, dropped)."""


class TimingError(ValueError):
    """A timing setting out of its range, or timings that cannot be summarised."""


def check_count(name: str, value: Any, low: int = 1, high: int | None = None) -> int:
    """``value`` when it is an integer in ``low..high`` (no upper bound without ``high``), else a
    :class:`TimingError` naming it: the one range check of counts (rounds, chunks, repeats, threads, ...)."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high)
    if not ok:
        if high is None and low == 1:
            expected = "a positive integer"
        elif high is None:
            expected = f"an integer >= {low}"
        else:
            expected = f"an integer in {low}..{high:,}"
        raise TimingError(f"{name}: expected {expected}, got {value!r}")
    return value


def resolve_clock(clock: str, threads: int, *, cpu: bool = True) -> str:
    """``auto`` is ``thread`` (CPU time of the calling thread) for one CPU thread, else ``wall``."""
    if clock not in CLOCKS:
        raise TimingError(f"clock: expected one of {list(CLOCKS)}, got {clock!r}")
    if clock != "auto":
        return clock
    return "thread" if threads == 1 and cpu else "wall"


def clock_ns(clock: str) -> Callable[[], int]:
    """The nanosecond clock named ``clock`` (``thread`` or ``wall``; resolve ``auto`` first)."""
    return time.thread_time_ns if clock == "thread" else time.perf_counter_ns


def quantile(ordered: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile of sorted values (numpy's default method)."""
    pos = q * (len(ordered) - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(samples_ms: Sequence[float]) -> dict[str, Any]:
    """Median, mean, standard deviation, inter-quartile range, minimum, 10th percentile and count of runs (ms).

    A run that took no time (or less) is a clock that did not advance, not a run, and is left out: on a virtual
    machine the kernel subtracts steal time from a thread's CPU time, and the thread clock can stand still
    through a short run (one of the 3.3 million part runs of a ``tiny`` profile read 0 ns, and the minimum
    made that context of the part 0).
    """
    ordered = sorted(float(s) for s in samples_ms if s > 0)
    if not ordered:
        raise TimingError(f"cannot summarise {len(samples_ms)} timings: none is positive (the clock did not advance)")
    n = len(ordered)
    mean = sum(ordered) / n
    var = sum((s - mean) ** 2 for s in ordered) / (n - 1) if n > 1 else 0.0
    return {
        "median_ms": quantile(ordered, 0.5),
        "mean_ms": mean,
        "std_ms": math.sqrt(var),
        "iqr_ms": quantile(ordered, 0.75) - quantile(ordered, 0.25),
        "min_ms": ordered[0],
        "p10_ms": quantile(ordered, 0.1),
        "count": n,
    }


def statistic_of(summary: Mapping[str, Any], statistic: str) -> float:
    """The value of ``statistic`` (one of :data:`STATISTICS`) in a :func:`summarize` result."""
    if statistic not in STATISTICS:
        raise TimingError(f"statistic: expected one of {list(STATISTICS)}, got {statistic!r}")
    return float(summary[f"{statistic}_ms"])


def rounds_until(rounds: int, min_seconds: float) -> Iterator[int]:
    """Round numbers 0, 1, ...: at least ``rounds`` of them, and more until ``min_seconds`` of wall time passed.

    The clock starts at the first round. Spanning a minimum time (rather than a number of runs) is what makes
    a low statistic robust on a machine whose speed changes in phases: the minimum of a measurement is only
    undisturbed if some of its rounds fell into an undisturbed phase.
    """
    check_count("rounds", rounds)
    start = time.perf_counter()
    k = 0
    while k < rounds or time.perf_counter() - start < min_seconds:
        yield k
        k += 1


def time_runs(run: Runner, n: int, clock: Callable[[], int]) -> list[float]:
    """``n`` timed calls of ``run``, in ms."""
    samples = []
    for _ in range(n):
        start = clock()
        run()
        samples.append((clock() - start) / 1e6)
    return samples


def time_pipeline(
    stages: Sequence[Stage], x: Any, n: int, clock: Callable[[], int], samples: list[list[float]] | None = None
) -> list[list[float]]:
    """Run ``stages`` in sequence (each on the previous one's output) ``n`` times, timing every stage.

    This is how parts are measured *in context*: when a part runs, the parts before it have just run, so the
    caches hold what they hold in the whole network (the input hot, the part's weights evicted by the layers
    before it). Returns (or extends) one list of per-run times in ms per stage.
    """
    samples = samples if samples is not None else [[] for _ in stages]
    for _ in range(n):
        h = x
        for i, stage in enumerate(stages):
            start = clock()
            h = stage(h)
            samples[i].append((clock() - start) / 1e6)
    return samples


def interleave(
    items: Sequence[TimedRuns],
    *,
    warmup: int,
    repeats: int,
    rounds: int,
    min_seconds: float,
    context: Callable[[], ContextManager[Any]] | None = None,
) -> float:
    """The timing loop of every latency measurement; returns the mean wall time of one round in seconds.

    Every item is warmed up with ``warmup`` runs; then, for at least ``rounds`` rounds and at least
    ``min_seconds`` (:func:`rounds_until`), each item in turn gets one untimed run (its caches were just used by
    the previous item; not in the first round of a one-round measurement) and ``ceil(repeats / rounds)`` timed
    runs. ``repeats`` is therefore a minimum: small networks get more runs, spread over the time span.
    ``context`` (e.g. torch's thread setting and ``inference_mode``) is entered around the whole loop.
    """
    check_count("rounds", rounds)
    per_round = max(1, math.ceil(repeats / rounds))
    with context() if context is not None else contextlib.nullcontext():
        for timed in items:
            timed(warmup, None)
        began = time.perf_counter()
        k = 0
        for k in rounds_until(rounds, min_seconds):
            for timed in items:
                if rounds > 1 or k > 0:  # a one-round measurement's first round follows the warm-up directly
                    timed(1, None)
                timed(per_round, k)
        return (time.perf_counter() - began) / (k + 1)


@dataclass(frozen=True)
class Timing:
    """The settings of one interleaved measurement (``clock`` resolved by :meth:`from_dict`: ``thread`` or ``wall``)."""

    warmup: int = 10
    repeats: int = 100
    rounds: int = 20
    min_seconds: float = 4.0
    clock: str = "auto"
    statistic: str = "min"
    threads: int = 1

    @classmethod
    def from_dict(cls, data: Any, where: str = "settings", *, default_threads: int = 1) -> Timing:
        """Checked settings of a request (unknown keys and bad values are an :class:`AgentError`); a request that
        does not say ``threads`` gets ``default_threads`` (the agent's ``--threads``)."""
        if not isinstance(data, Mapping):
            raise TimingError(f"{where}: expected an object")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise TimingError(f"{where}: unknown keys {unknown}; allowed: {sorted(known)}")
        values = {**cls(threads=default_threads).__dict__, **data}
        limits = (("warmup", 0, 10**6), ("repeats", 1, 10**6), ("rounds", 1, 10**5), ("threads", 1, 1024))
        for name, low, high in limits:
            check_count(f"{where}.{name}", values[name], low, high)
        s = values["min_seconds"]
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s <= 3600:
            raise TimingError(f"{where}.min_seconds: expected a number of seconds in 0..3600, got {s!r}")
        clock = resolve_clock(values["clock"], values["threads"])
        if clock == "thread" and values["threads"] != 1:
            raise TimingError(f"{where}.clock: 'thread' measures one CPU thread; use it only with threads 1")
        statistic_of({"min_ms": 0, "p10_ms": 0, "median_ms": 0, "mean_ms": 0}, values["statistic"])
        return cls(**{**values, "clock": clock, "min_seconds": float(s)})


PipelineRun = tuple[Sequence[str], Sequence[Stage], Any]
"""One pipeline to time: the keys of its stages, the prepared stages, and its input."""


def time_pipelines(
    pipelines: Sequence[PipelineRun], timing: Timing, context: Callable[[], ContextManager[Any]] | None = None
) -> tuple[dict[str, tuple[list[float], list[float]]], float]:
    """Time ``pipelines`` in interleaved rounds; the runs of every key, pooled, in even and odd rounds.

    Returns ``({key: (even-round runs, odd-round runs)}, mean seconds of one round)``.
    """
    clock = clock_ns(timing.clock)
    pooled: dict[str, tuple[list[float], list[float]]] = {}
    for keys, _, _ in pipelines:
        for key in keys:
            pooled.setdefault(key, ([], []))

    def timed(keys: Sequence[str], stages: Sequence[Stage], x: Any) -> TimedRuns:
        def run(n: int, k: int | None) -> None:
            samples = time_pipeline(stages, x, n, clock)
            if k is not None:
                for key, runs in zip(keys, samples):
                    pooled[key][k % 2].extend(runs)

        return run

    seconds = interleave(
        [timed(*p) for p in pipelines],
        warmup=timing.warmup,
        repeats=timing.repeats,
        rounds=timing.rounds,
        min_seconds=timing.min_seconds,
        context=context,
    )
    return pooled, seconds


def summarize_halves(even: Sequence[float], odd: Sequence[float], statistic: str) -> dict[str, Any]:
    """:func:`summarize` of all runs, plus ``halves``: the statistic of the even and of the odd rounds (or None)."""
    summary = summarize([*even, *odd])
    summary["halves"] = (
        [statistic_of(summarize(even), statistic), statistic_of(summarize(odd), statistic)] if odd else None
    )
    return summary


def random_input(shape: Sequence[int]) -> Any:
    """The seeded float32 input every measurement uses."""
    import numpy as np

    return np.random.default_rng(0).standard_normal(tuple(shape), dtype=np.float32)


# --- a fresh process for every measurement ----------------------------------------------------------------------
class FreshProcessError(Exception):
    """What went wrong in :func:`in_fresh_process`'s child: the exception's class name, its first line, and its
    ``status`` where it had one (the agent's HTTP status)."""

    def __init__(self, kind: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind, self.message, self.status = kind, message, status


def fresh_process_available() -> bool:
    """Whether :func:`in_fresh_process` forks (POSIX: Linux, macOS, Android), rather than running in this process."""
    return hasattr(os, "fork")


def in_fresh_process(work: Callable[[], Any], close_in_child: Sequence[int] = ()) -> Any:
    """``work()`` run in a child process forked for it; its result (JSON-serialisable) is returned here.

    Why: in a process that has loaded many runtime sessions, a session loaded later runs slower. On an AMD Zen 3
    with onnxruntime 1.32, int8 `tiny` networks loaded again after 100 others ran up to 1.11x as long as when
    first loaded, unevenly (0.98-1.10x per network), and a lookup table profiled in one process predicted
    networks measured elsewhere worse for it (docs/latency.md, run AF). A child forked per measurement has loaded
    nothing before it: every model is timed as the first models of a process are. The child loads, runs and
    exits; its sessions never outlive the measurement.

    An exception in the child raises :class:`FreshProcessError` here; a child killed by a signal (a crash in the
    runtime) raises one too, naming the signal, and this process goes on. Where ``os.fork`` does not exist
    (Windows), ``work()`` runs in this process.

    ``close_in_child``: file descriptors the child closes before ``work`` (the agent's listening socket and the
    caller's connection: a child must not hold the port or the connection open if this process dies first).
    """
    if not fresh_process_available():
        return work()
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        # JAX (imported by litert-torch) and Python 3.12+ warn against forking a process with threads; the child
        # runs only ``work``, which must not use the parent's thread pools (backends.Backend.converts_in_child)
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        warnings.filterwarnings("ignore", message=r".*use of fork\(\) may lead to deadlocks", category=DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: report, then leave without running this process's exit handlers
        code = 0
        try:
            os.close(read_end)
            for fd in close_in_child:
                with contextlib.suppress(OSError):
                    os.close(fd)
            try:
                data = json.dumps({"result": work()}).encode()
            except BaseException as exc:  # noqa: BLE001  (everything goes back to the parent)
                text = str(exc).strip().splitlines()
                status = getattr(exc, "status", None)
                data = json.dumps({"error": (text[0] if text else type(exc).__name__)[:500],
                                   "kind": type(exc).__name__, "status": status if isinstance(status, int) else None
                                   }).encode()
                code = 1
            with os.fdopen(write_end, "wb") as fh:
                fh.write(data)
        finally:
            os._exit(code)
    os.close(write_end)
    status = None
    try:
        with os.fdopen(read_end, "rb") as fh:
            data = fh.read()
        _, status = os.waitpid(pid, 0)
    finally:
        if status is None:  # interrupted here (Ctrl-C): the child goes too
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
    try:
        payload = json.loads(data) if data else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        payload = None
    if not isinstance(payload, dict) or not ("result" in payload or "error" in payload):
        if os.WIFSIGNALED(status):
            number = os.WTERMSIG(status)
            how = f"was killed by {signal.Signals(number).name if number in set(signal.Signals) else number}"
        else:
            how = f"exited with status {os.WEXITSTATUS(status)} without a result"
        raise FreshProcessError("crash", f"the measuring process {how} (a crash in the runtime, or out of memory)")
    if "error" in payload:
        raise FreshProcessError(str(payload.get("kind")), str(payload["error"]), payload.get("status"))
    return payload["result"]
