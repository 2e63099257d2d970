"""Latency measurement of a module or a whole architecture on the local device.

Two backends share one timing loop:

* ``torch``: eager PyTorch in ``eval()`` and ``inference_mode``, ``channels_last`` by default (MixConv's split /
  per-group depthwise / concat is much faster in that layout on CPU), the CPU thread count set for the
  measurement and restored afterwards; on CUDA every run is followed by ``torch.cuda.synchronize()``.
* ``onnxruntime``: the module is exported with the legacy TorchScript exporter (``dynamo=False``; no onnxscript
  needed) and run on the CPU execution provider with ``intra_op_num_threads`` set, full graph optimisation and
  sequential execution.

Each measurement warms up, then times many single inferences and keeps summary statistics (10th percentile,
median, mean, standard deviation, inter-quartile range, minimum). With one CPU thread the clock is the calling
thread's CPU time (``time.thread_time_ns``; both backends compute on the calling thread then), so time the
operating system gives to other processes is not counted; otherwise it is ``time.perf_counter_ns`` (see
:attr:`MeasureConfig.clock`). The value the lookup table and the validation use is
:attr:`MeasureConfig.statistic`, by default the minimum: other processes only add time, so the fastest runs
track the undisturbed latency where the mean and even the median follow the machine's load.
:func:`measure_interleaved` goes further: it times several modules in alternating rounds, so slow
phases of the machine are spread evenly over all of them instead of biasing whichever was measured then.
:func:`interleave` is that one timing loop (warm-up, interleaved rounds, a minimum time span); end-to-end
measurements (:func:`measure_runners`) and the lookup table's parts timed in context
(:func:`~mixnas.evaluators.latency.profile.profile_archs`) both run in it.

The measurement rules themselves (the loop, the clocks, the summary statistics, the ONNX Runtime session
settings) live in :mod:`~mixnas.evaluators.latency.agent`, which imports nothing but the standard library
(numpy and onnxruntime inside functions), so that the latency agent on a device without torch times models the
same way; this module adds the torch side (building, exporting, ``torch_threads`` and ``inference_mode``).
*Where* pipelines of stages are timed is a :class:`Timer`: :class:`LocalTimer` (this process) or
:class:`~mixnas.evaluators.latency.remote.RemoteTimer` (an agent); :func:`measure_archs`,
:func:`measure_reference` and the profiling and validation built on them take either.

As in MnasNet (Tan et al., CVPR 2019, §5: single-thread big core of a Pixel 1, batch 1), the defaults are one
thread and batch size 1.

Steady allocator (torch backend, Linux / glibc): before the first torch measurement in a process,
:func:`steady_allocator` raises glibc malloc's mmap and trim thresholds, so activations of any size are reused
from the heap instead of being mapped (and page-faulted) afresh on every inference. glibc's own thresholds adapt
to the process's allocation history, which made the same network measure 28-47 ms in one process and 21 ms in
another (a 7 MB activation at 112x112); with the thresholds fixed, repeat measurements agree within ~5%. This is
the steady state of a deployed model (inference runtimes keep an arena), and it is a process-wide setting.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import logging
import math
import platform
import warnings
from collections import OrderedDict
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Iterator, Mapping, Protocol, Sequence

from mixnas.errors import LatencyTableError
from mixnas.evaluators.latency.agent import (
    AgentError,
    Timing,
    TimedRuns,
    clock_ns,
    host_info,
    import_onnxruntime,
    onnx_stage,
    quantile,
    random_input,
    summarize,
    time_pipelines,
    time_runs,
)
from mixnas.evaluators.latency.agent import interleave as agent_interleave
from mixnas.evaluators.latency.agent import rounds_until as agent_rounds_until
from mixnas.torch_runtime import torch_threads

if TYPE_CHECKING:  # pragma: no cover
    import torch

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime")
CLOCKS = ("auto", "wall", "thread")
STATISTICS = ("min", "p10", "median", "mean")
ONNX_OPSET = 17
DEFAULT_REPEATS = 100
DEFAULT_ROUNDS = 20
DEFAULT_MIN_SECONDS = 4.0

Runner = Callable[[], None]
Stage = Callable[[Any], Any]


@dataclass(frozen=True)
class MeasureConfig:
    """How to measure: backend, threads, batch size, device and the timing budget.

    Attributes:
        backend: ``torch`` or ``onnxruntime``.
        threads: CPU threads (torch intra-op threads, or ONNX Runtime ``intra_op_num_threads``).
        batch_size: images per inference.
        device: ``cpu`` or ``cuda`` (torch backend only).
        warmup: untimed runs before timing.
        repeats: timed runs (per round when interleaving).
        channels_last: run the torch backend in ``channels_last`` memory format.
        clock: ``wall`` (``perf_counter``), ``thread`` (CPU time of the calling thread) or ``auto``: ``thread``
            for one CPU thread, else ``wall``. With one thread both backends compute on the calling thread, so
            its CPU time is the latency the run would have on an idle core; unlike wall time it does not count
            the time other processes hold the core, which on a shared machine is most of the noise.
        statistic: the value a measurement is summarised by (:data:`STATISTICS`): ``min`` (default), ``p10``,
            ``median`` or ``mean``. Other processes only ever add time (cache and memory-bandwidth contention even
            to CPU time), so a low quantile estimates the latency of an undisturbed device best. On this
            project's shared 2-core virtual machine, whose speed changes by up to 2x in phases of 0.5-3 s, two
            passes over the same 50 networks agreed to 1.7% RMSPE (Spearman 0.994) by their minima and to 2.6%
            (0.981) by their 10th percentiles in a noisy hour, and equally well (0.7-0.8%) in a quiet one;
            medians disagreed by 10% in the first sweeps.
        drift_correction: time a fixed reference network beside every chunk of measurements and rescale them to
            the machine speed at which the lookup table was started (see :func:`measure_archs`).
        min_seconds: the least wall time one interleaved measurement spans: rounds go on past ``rounds`` until
            it has passed (0 turns it off). A machine's slow phases can outlast a whole measurement of small
            networks (50 ``tiny`` networks at 32 px take 0.7 s with ONNX Runtime), and then every minimum is
            taken in the same slow phase: on this project's development machine, two passes over 25 such
            networks differed in level by up to 34%, while passes of 4 s or more agreed to 0.2% in level and
            0.14-0.24% per network. See :func:`rounds_until`.
    """

    backend: str = "torch"
    threads: int = 1
    batch_size: int = 1
    device: str = "cpu"
    warmup: int = 10
    repeats: int = DEFAULT_REPEATS
    channels_last: bool = True
    clock: str = "auto"
    statistic: str = "min"
    drift_correction: bool = True
    min_seconds: float = DEFAULT_MIN_SECONDS

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise LatencyTableError(f"unknown latency backend {self.backend!r}: expected one of {list(BACKENDS)}")
        # Upper bounds are sanity limits: torch crashes on absurd thread counts, a huge batch cannot be allocated.
        for name, maximum in (("threads", 1024), ("batch_size", 1024), ("repeats", 1_000_000)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
                raise LatencyTableError(f"{name}: expected a positive integer, at most {maximum:,}, got {value!r}")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or not 0 <= self.warmup <= 1_000_000:
            raise LatencyTableError(f"warmup: expected an integer in 0..1,000,000, got {self.warmup!r}")
        if self.device not in ("cpu", "cuda"):
            raise LatencyTableError(f"device: expected 'cpu' or 'cuda', got {self.device!r}")
        seconds = self.min_seconds
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < math.inf:
            raise LatencyTableError(f"min_seconds: expected a non-negative number of seconds, got {seconds!r}")
        if self.statistic not in STATISTICS:
            raise LatencyTableError(f"statistic: expected one of {list(STATISTICS)}, got {self.statistic!r}")
        if self.clock not in CLOCKS:
            raise LatencyTableError(f"clock: expected one of {list(CLOCKS)}, got {self.clock!r}")
        if self.clock == "thread" and (self.threads != 1 or self.device != "cpu"):
            raise LatencyTableError("clock 'thread' measures one CPU thread: use it only with threads 1 on the CPU")
        if self.device == "cuda" and self.backend != "torch":
            raise LatencyTableError("device 'cuda' is only supported by the torch backend")

    @property
    def resolved_clock(self) -> str:
        """The clock actually used: ``auto`` resolved to ``thread`` or ``wall``."""
        if self.clock != "auto":
            return self.clock
        return "thread" if self.threads == 1 and self.device == "cpu" else "wall"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "clock": self.resolved_clock}


@dataclass(frozen=True)
class Measurement:
    """Summary statistics of timed runs, in milliseconds."""

    median_ms: float
    mean_ms: float
    std_ms: float
    iqr_ms: float
    min_ms: float
    p10_ms: float
    count: int
    drift: float = 1.0
    halves: tuple[float, float] | None = None

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> Measurement:
        """Summarise raw per-run times (at least one positive); :func:`~mixnas.evaluators.latency.agent.summarize`."""
        if not any(s > 0 for s in samples_ms):
            raise LatencyTableError(f"cannot summarise {len(samples_ms)} timings: none is positive")
        return cls(**summarize(samples_ms))

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any], where: str = "measurement") -> Measurement:
        """The measurement an agent reported (:func:`~mixnas.evaluators.latency.agent.summarize_halves`)."""
        names = ("median_ms", "mean_ms", "std_ms", "iqr_ms", "min_ms", "p10_ms")
        try:
            values = {n: float(summary[n]) for n in names}
            count = int(summary["count"])
            halves = summary.get("halves")
            pair = None if halves is None else (float(halves[0]), float(halves[1]))
        except (KeyError, TypeError, ValueError, IndexError):
            raise LatencyTableError(f"{where}: expected {', '.join(names)}, count and halves") from None
        if count < 1 or not all(math.isfinite(v) and v >= 0 for v in values.values()):
            raise LatencyTableError(f"{where}: expected finite non-negative times and a positive count")
        return cls(**values, count=count, halves=pair)

    def value(self, statistic: str, *, corrected: bool = True) -> float:
        """The summary value named ``statistic`` (one of :data:`STATISTICS`), times :attr:`drift` if ``corrected``.

        ``drift`` is 1 unless the measurement was taken beside a reference network (:func:`measure_archs` with
        ``reference_ms``): then it is ``reference_ms / reference measured now``, which maps the value to the
        machine speed at which the lookup table was started.
        """
        if statistic not in STATISTICS:
            raise LatencyTableError(f"statistic: expected one of {list(STATISTICS)}, got {statistic!r}")
        return float(getattr(self, f"{statistic}_ms")) * (self.drift if corrected else 1.0)

    def half_values(self, *, corrected: bool = True) -> tuple[float, float] | None:
        """The statistic over the even and over the odd rounds separately (times :attr:`drift` if ``corrected``).

        Set by :func:`measure_runners` with two rounds or more: how far the two halves of one measurement
        disagree is the measurement's own repeatability on this machine.
        """
        if self.halves is None:
            return None
        factor = self.drift if corrected else 1.0
        return self.halves[0] * factor, self.halves[1] * factor

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_quantile = quantile


# --- device metadata ------------------------------------------------------------------------------------------
def device_metadata(config: MeasureConfig) -> dict[str, Any]:
    """Where and with what a measurement was taken: CPU / GPU model, thread and library versions, platform."""
    import torch

    meta: dict[str, Any] = {**host_info(), "torch": torch.__version__}
    if config.device == "cuda" and torch.cuda.is_available():
        meta["accelerator"] = torch.cuda.get_device_name()
    if config.backend == "onnxruntime":
        meta["onnxruntime"] = _import_onnxruntime().__version__
    else:
        meta["steady_allocator"] = steady_allocator()
    return meta


# --- backends -------------------------------------------------------------------------------------------------
def _import_onnxruntime() -> Any:
    try:
        return import_onnxruntime()
    except AgentError:
        raise LatencyTableError(
            "the onnxruntime backend needs onnxruntime and onnx: pip install 'mixnas[onnx]'"
        ) from None


def export_onnx(module: torch.nn.Module, input_shape: Sequence[int], *, dynamic_batch: bool = False) -> bytes:
    """Serialise ``module`` (in eval mode) to an ONNX model for one input of ``input_shape`` (with
    ``dynamic_batch``: any batch size, the first axis of ``input`` and ``output`` named ``batch``)."""
    import torch

    try:
        import onnx  # noqa: F401  (the legacy exporter needs it)
    except ImportError:
        raise LatencyTableError("exporting to ONNX needs onnx: pip install 'mixnas[onnx]'") from None
    module = module.eval()
    example = torch.zeros(*input_shape)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            buffer,
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=["input"],
            output_names=["output"],
            do_constant_folding=True,
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None,
        )
    return buffer.getvalue()


_MALLOC_THRESHOLD = 1 << 30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


@functools.cache
def steady_allocator() -> bool:
    """Fix glibc malloc's mmap / trim thresholds for the process (once); False where that is not possible."""
    if platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        done = bool(libc.mallopt(_M_MMAP_THRESHOLD, _MALLOC_THRESHOLD)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, _MALLOC_THRESHOLD)
        )
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    if not done:
        logger.warning("mallopt refused the steady-allocator thresholds; torch latencies may depend on history")
    return done


def _torch_stage(module: torch.nn.Module, config: MeasureConfig) -> Stage:
    import torch

    steady_allocator()
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LatencyTableError("device 'cuda' was requested but torch sees no CUDA device")
    module = module.eval().to(device)
    if config.channels_last:
        module = module.to(memory_format=torch.channels_last)
    if device.type != "cuda":
        return module
    sync = torch.cuda.synchronize

    def run(x: Any) -> Any:
        y = module(x)
        sync()
        return y

    return run


def _onnxruntime_stage(module: torch.nn.Module, input_shape: tuple[int, ...], config: MeasureConfig) -> Stage:
    _import_onnxruntime()
    try:
        return onnx_stage(export_onnx(module, input_shape), config.threads)  # the agent's session settings
    except AgentError as exc:
        raise LatencyTableError(str(exc)) from None


def _check_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    if len(input_shape) < 1 or any(int(d) < 1 for d in input_shape):
        raise LatencyTableError(f"input shape: expected positive dimensions, got {tuple(input_shape)}")
    return tuple(int(d) for d in input_shape)


def make_stage(module: torch.nn.Module, input_shape: Sequence[int], config: MeasureConfig) -> Stage:
    """``module`` prepared for ``config``'s backend: a function from a backend input to a backend output.

    Inputs and outputs are torch tensors (``channels_last`` when configured) for ``torch`` and float32 numpy
    arrays for ``onnxruntime``, so stages of consecutive parts can be chained like the network chains its
    layers. Torch stages must be called inside :func:`torch_threads` and ``torch.inference_mode``.
    """
    shape = _check_shape(input_shape)
    if config.backend == "torch":
        return _torch_stage(module, config)
    return _onnxruntime_stage(module, shape, config)


def make_input(input_shape: Sequence[int], config: MeasureConfig) -> Any:
    """A random (seeded) input of ``input_shape`` in the form ``config``'s backend takes."""
    shape = _check_shape(input_shape)
    x = random_input(shape)
    if config.backend != "torch":
        return x
    import torch

    t = torch.from_numpy(x).to(config.device)
    if config.channels_last and t.dim() == 4:
        t = t.contiguous(memory_format=torch.channels_last)
    return t


def make_runner(module: torch.nn.Module, input_shape: Sequence[int], config: MeasureConfig) -> Runner:
    """A zero-argument function that runs one inference of ``module`` on a fixed input with ``config``'s backend."""
    stage = make_stage(module, input_shape, config)
    x = make_input(input_shape, config)

    def run() -> None:
        stage(x)

    return run


def clock_for(config: MeasureConfig) -> Callable[[], int]:
    """The nanosecond clock ``config`` asks for."""
    return clock_ns(config.resolved_clock)


def _check_rounds(rounds: Any) -> None:
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise LatencyTableError(f"rounds: expected a positive integer, got {rounds!r}")


def rounds_until(rounds: int, min_seconds: float) -> Iterator[int]:
    """:func:`mixnas.evaluators.latency.agent.rounds_until`, refusing a bad ``rounds`` as a LatencyTableError."""
    _check_rounds(rounds)
    return agent_rounds_until(rounds, min_seconds)


def _torch_context(config: MeasureConfig) -> Callable[[], ContextManager[Any]]:
    @contextlib.contextmanager
    def context() -> Iterator[None]:
        import torch

        with torch_threads(config.threads), torch.inference_mode():
            yield

    return context


def interleave(items: Sequence[TimedRuns], config: MeasureConfig, *, rounds: int) -> float:
    """The timing loop of every latency measurement (:func:`mixnas.evaluators.latency.agent.interleave`).

    Returns the mean wall time of one round in seconds. Runs inside ``torch_threads(config.threads)`` and
    ``torch.inference_mode``; what an item keeps of its timings is up to the item.
    """
    _check_rounds(rounds)
    return agent_interleave(
        items,
        warmup=config.warmup,
        repeats=config.repeats,
        rounds=rounds,
        min_seconds=config.min_seconds,
        context=_torch_context(config),
    )


def timing_settings(config: MeasureConfig, rounds: int) -> Timing:
    """The agent's form of ``config``'s timing settings (what a measure request carries)."""
    _check_rounds(rounds)
    return Timing(
        warmup=config.warmup,
        repeats=config.repeats,
        rounds=rounds,
        min_seconds=float(config.min_seconds),
        clock=config.resolved_clock,
        statistic=config.statistic,
        threads=config.threads,
    )


# --- timers: where pipelines of stages are timed -------------------------------------------------------------
@dataclass(frozen=True)
class StageSpec:
    """One stage of a pipeline to time: a key (runs of equal keys are pooled), how to build it, its input shape.

    ``key`` names what is timed (a layer signature, ``net:<arch id>``); one timer must only ever see one
    module (and input shape) under one key, since timers keep prepared stages by key.
    """

    key: str
    build: Callable[[], Any]
    input_shape: tuple[int, ...]


Pipeline = Sequence[StageSpec]


class Timer(Protocol):
    """Times pipelines of stages on some device: this process (:class:`LocalTimer`) or an agent (``remote.py``)."""

    def device(self, config: MeasureConfig) -> dict[str, Any]:
        """The metadata of the device that measures (stored in a latency table)."""
        ...

    def time(self, pipelines: Sequence[Pipeline], config: MeasureConfig, *, rounds: int) -> Timed:
        """Time ``pipelines`` in interleaved rounds; a pooled :class:`Measurement` per key, and round seconds."""
        ...


Timed = tuple[dict[str, Measurement], float]


class LocalTimer:
    """Times pipelines in this process with ``config``'s backend, keeping the ``limit`` latest prepared stages."""

    def __init__(self, limit: int = 512) -> None:
        self.limit = limit
        self.stages: OrderedDict[str, Stage] = OrderedDict()

    def device(self, config: MeasureConfig) -> dict[str, Any]:
        return device_metadata(config)

    def _stage(self, spec: StageSpec, config: MeasureConfig) -> Stage:
        stage = self.stages.pop(spec.key, None)
        if stage is None:
            stage = make_stage(spec.build(), spec.input_shape, config)
        self.stages[spec.key] = stage  # most recently used last
        while len(self.stages) > self.limit:
            self.stages.popitem(last=False)
        return stage

    def time(self, pipelines: Sequence[Pipeline], config: MeasureConfig, *, rounds: int) -> Timed:
        with torch_threads(config.threads):
            runs = [
                ([s.key for s in p], [self._stage(s, config) for s in p], make_input(p[0].input_shape, config))
                for p in pipelines
            ]
        pooled, seconds = time_pipelines(runs, timing_settings(config, rounds), _torch_context(config))
        return {k: _pooled_measurement(even, odd, config.statistic) for k, (even, odd) in pooled.items()}, seconds


def _pooled_measurement(even: Sequence[float], odd: Sequence[float], statistic: str) -> Measurement:
    m = Measurement.from_samples([*even, *odd])
    if not odd:
        return m
    halves = tuple(Measurement.from_samples(h).value(statistic) for h in (even, odd))
    return replace(m, halves=halves)


# --- public measurement API ----------------------------------------------------------------------------------
def measure_runners(runners: Sequence[Runner], config: MeasureConfig, *, rounds: int = 1) -> list[Measurement]:
    """Time several prepared runners in interleaved rounds (:func:`interleave`) and summarise each.

    With two rounds or more, each summary also holds the statistic of its even and of its odd rounds
    (:attr:`Measurement.halves`).
    """
    clock = clock_for(config)
    # samples[i][k % 2]: runner i's runs in even / odd rounds
    samples: list[tuple[list[float], list[float]]] = [([], []) for _ in runners]

    def timed(i: int) -> TimedRuns:
        def run(n: int, k: int | None) -> None:
            runs = time_runs(runners[i], n, clock)
            if k is not None:
                samples[i][k % 2].extend(runs)

        return run

    interleave([timed(i) for i in range(len(runners))], config, rounds=rounds)
    return [_pooled_measurement(even, odd, config.statistic) for even, odd in samples]


def measure_module(
    module: torch.nn.Module, input_shape: Sequence[int], config: MeasureConfig | None = None
) -> Measurement:
    """Latency of one inference of ``module`` on an input of ``input_shape`` (batch dimension included)."""
    config = config or MeasureConfig()
    with torch_threads(config.threads):
        runner = make_runner(module, input_shape, config)
    return measure_runners([runner], config)[0]


def measure_interleaved(
    items: Sequence[tuple[torch.nn.Module, Sequence[int]]],
    config: MeasureConfig | None = None,
    *,
    rounds: int = DEFAULT_ROUNDS,
) -> list[Measurement]:
    """Latency of several ``(module, input_shape)`` pairs, timed in alternating rounds (see module docstring)."""
    config = config or MeasureConfig()
    with torch_threads(config.threads):
        runners = [make_runner(m, shape, config) for m, shape in items]
    return measure_runners(runners, config, rounds=rounds)


def arch_input_shape(arch: Any, batch_size: int) -> tuple[int, int, int, int]:
    """Input shape ``(batch, 3, resolution, resolution)`` of an architecture."""
    return (batch_size, 3, arch.resolution, arch.resolution)


def build_network(arch: Any) -> torch.nn.Module:
    """The whole network of ``arch`` in eval mode (:func:`mixnas.models.build`)."""
    from mixnas.models import build

    return build(arch).eval()


def measure_arch(arch: Any, config: MeasureConfig | None = None) -> Measurement:
    """End-to-end latency of an :class:`~mixnas.search_space.arch.Architecture` at its own resolution."""
    config = config or MeasureConfig()
    return measure_module(build_network(arch), arch_input_shape(arch, config.batch_size), config)


REFERENCE_ARCH = "mixnet_tiny"


def network_spec(arch: Any, batch_size: int, key: str | None = None) -> StageSpec:
    """A whole network as a one-stage pipeline (key ``net:<arch id>`` unless given)."""
    return StageSpec(key or f"net:{arch.id}", lambda: build_network(arch), arch_input_shape(arch, batch_size))


def reference_spec(config: MeasureConfig) -> StageSpec:
    """The fixed reference network (the ``mixnet_tiny`` preset), for drift correction."""
    from mixnas.search_space.presets import resolve_arch

    return network_spec(resolve_arch(REFERENCE_ARCH), config.batch_size, key=f"reference:{REFERENCE_ARCH}")


def reference_runner(config: MeasureConfig) -> Runner:
    """The fixed reference network prepared for ``config`` in this process, for drift correction."""
    spec = reference_spec(config)
    with torch_threads(config.threads):
        return make_runner(spec.build(), spec.input_shape, config)


def measure_reference(config: MeasureConfig, *, rounds: int = DEFAULT_ROUNDS, timer: Timer | None = None) -> float:
    """``config.statistic`` of the reference network over ``3 * repeats`` runs (the drift baseline)."""
    longer = replace(config, repeats=3 * config.repeats)
    spec = reference_spec(config)
    measured, _ = (timer or LocalTimer()).time([[spec]], longer, rounds=rounds)
    return measured[spec.key].value(config.statistic)


def measure_archs(
    archs: Sequence[Any],
    config: MeasureConfig | None = None,
    *,
    rounds: int = DEFAULT_ROUNDS,
    chunk: int = 25,
    progress: Callable[[int, int], None] | None = None,
    reference_ms: float | None = None,
    references: Sequence[tuple[Any, float]] = (),
    timer: Timer | None = None,
) -> list[Measurement]:
    """End-to-end latency of many architectures, interleaved in equal chunks of at most ``chunk`` networks.

    Interleaving inside a chunk spreads the machine's slow phases over all of its networks (and gives them one
    drift factor); chunking bounds the memory held by built networks and ONNX Runtime sessions.
    ``progress(done, total)`` is called per chunk. ``timer`` says where they run (default: this process).

    Drift correction: with ``reference_ms`` (the reference network's latency when the lookup table was started),
    the reference network is timed in every chunk too, and each measurement of the chunk gets ``drift =
    reference_ms / reference now`` (see :meth:`Measurement.value`). With ``references``, pairs of (architecture,
    its latency at the table's speed), all of them are timed in every chunk and ``drift`` is the median of their
    ratios, which is steadier than one network. On a shared machine whose speed drifts with other people's load
    this keeps measurements taken minutes apart comparable; on a dedicated device drift stays near 1.
    """
    config = config or MeasureConfig()
    if references:
        ref_specs = [network_spec(a, config.batch_size, key=f"drift{i}:{a.id}") for i, (a, _) in enumerate(references)]
        baselines = [float(ms) for _, ms in references]
    elif reference_ms is not None:
        ref_specs, baselines = [reference_spec(config)], [float(reference_ms)]
    else:
        ref_specs, baselines = [], []
    size = math.ceil(len(archs) / math.ceil(len(archs) / chunk)) if archs else 1  # balanced chunks
    timer = timer or LocalTimer(limit=size + len(ref_specs))  # keeps the references prepared, not old chunks
    results: list[Measurement] = []
    for start in range(0, len(archs), size):
        part = enumerate(archs[start : start + size], start)
        specs = [network_spec(a, config.batch_size, key=f"net{i}:{a.id}") for i, a in part]
        measured, _ = timer.time([[s] for s in [*specs, *ref_specs]], config, rounds=rounds)
        drift = 1.0
        if ref_specs:
            ratios = sorted(b / measured[s.key].value(config.statistic) for b, s in zip(baselines, ref_specs))
            drift = _quantile(ratios, 0.5)
        results.extend(replace(measured[s.key], drift=drift) for s in specs)
        if progress is not None:
            progress(len(results), len(archs))
    return results
