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

import ctypes
import functools
import io
import logging
import math
import os
import platform
import time
import warnings
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from mixnas.errors import LatencyTableError
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
        """Summarise raw per-run times (at least one)."""
        if not samples_ms:
            raise LatencyTableError("cannot summarise an empty list of timings")
        ordered = sorted(float(s) for s in samples_ms)
        n = len(ordered)
        mean = sum(ordered) / n
        var = sum((s - mean) ** 2 for s in ordered) / (n - 1) if n > 1 else 0.0
        return cls(
            median_ms=_quantile(ordered, 0.5),
            mean_ms=mean,
            std_ms=math.sqrt(var),
            iqr_ms=_quantile(ordered, 0.75) - _quantile(ordered, 0.25),
            min_ms=ordered[0],
            p10_ms=_quantile(ordered, 0.1),
            count=n,
        )

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


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile of sorted values (numpy's default method)."""
    pos = q * (len(ordered) - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


# --- device metadata ------------------------------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (Linux), else :func:`platform.processor`, else ``unknown``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "Processor", "cpu model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def device_metadata(config: MeasureConfig) -> dict[str, Any]:
    """Where and with what a measurement was taken: CPU / GPU model, thread and library versions, platform."""
    import torch

    meta: dict[str, Any] = {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "accelerator": "cpu",
    }
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
        import onnxruntime
    except ImportError:
        raise LatencyTableError(
            "the onnxruntime backend needs onnxruntime and onnx: pip install 'mixnas[onnx]'"
        ) from None
    return onnxruntime


def export_onnx(module: torch.nn.Module, input_shape: Sequence[int]) -> bytes:
    """Serialise ``module`` (in eval mode) to an ONNX model for one input of ``input_shape``."""
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
    ort = _import_onnxruntime()
    model_bytes = export_onnx(module, input_shape)
    options = ort.SessionOptions()
    options.intra_op_num_threads = config.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(model_bytes, sess_options=options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    run_session = session.run

    def run(x: Any) -> Any:
        return run_session(None, {name: x})[0]

    return run


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
    import numpy as np

    shape = _check_shape(input_shape)
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
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


def time_runs(run: Runner, n: int, clock: Callable[[], int]) -> list[float]:
    samples = []
    for _ in range(n):
        start = clock()
        run()
        samples.append((clock() - start) / 1e6)
    return samples


def clock_for(config: MeasureConfig) -> Callable[[], int]:
    """The nanosecond clock ``config`` asks for."""
    return time.thread_time_ns if config.resolved_clock == "thread" else time.perf_counter_ns


def time_pipeline(
    stages: Sequence[Stage], x: Any, n: int, clock: Callable[[], int], samples: list[list[float]] | None = None
) -> list[list[float]]:
    """Run ``stages`` in sequence (each on the previous one's output) ``n`` times, timing every stage.

    This is how the lookup table measures parts *in context*: when a part runs, the parts before it have just
    run, so the caches hold what they hold in the whole network (the input hot, the part's weights evicted by
    the layers before it). Returns (or extends) one list of per-run times in ms per stage.
    """
    samples = samples if samples is not None else [[] for _ in stages]
    for _ in range(n):
        h = x
        for i, stage in enumerate(stages):
            start = clock()
            h = stage(h)
            samples[i].append((clock() - start) / 1e6)
    return samples


def rounds_until(rounds: int, min_seconds: float) -> Iterator[int]:
    """Round numbers 0, 1, ...: at least ``rounds`` of them, and more until ``min_seconds`` of wall time passed.

    The clock starts at the first round. Spanning a minimum time (rather than a number of runs) is what makes
    a low statistic robust on a machine whose speed changes in phases: the minimum of a measurement is only
    undisturbed if some of its rounds fell into an undisturbed phase.
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise LatencyTableError(f"rounds: expected a positive integer, got {rounds!r}")
    start = time.perf_counter()
    k = 0
    while k < rounds or time.perf_counter() - start < min_seconds:
        yield k
        k += 1


TimedRuns = Callable[[int, "int | None"], None]
"""``timed(n, k)``: run a network ``n`` times, keeping the timings as round ``k``'s (``k`` None: untimed, dropped)."""


def interleave(items: Sequence[TimedRuns], config: MeasureConfig, *, rounds: int) -> float:
    """The timing loop of every latency measurement; returns the mean wall time of one round in seconds.

    Every item is warmed up with ``config.warmup`` runs; then, for at least ``rounds`` rounds and at least
    ``config.min_seconds`` (:func:`rounds_until`), each item in turn gets one untimed run (its caches were just
    used by the previous item; not in the first round of a one-round measurement) and ``ceil(repeats / rounds)``
    timed runs. ``repeats`` is therefore a minimum: small networks get more runs, spread over the time span.
    Runs inside ``torch_threads(config.threads)`` and ``torch.inference_mode``; what an item keeps of its
    timings (one list per network, one per part of a network run part by part) is up to the item.
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise LatencyTableError(f"rounds: expected a positive integer, got {rounds!r}")
    per_round = max(1, math.ceil(config.repeats / rounds))
    import torch

    with torch_threads(config.threads), torch.inference_mode():
        for timed in items:
            timed(config.warmup, None)
        began = time.perf_counter()
        for k in rounds_until(rounds, config.min_seconds):
            for timed in items:
                if rounds > 1 or k > 0:  # a one-round measurement's first round follows the warm-up directly
                    timed(1, None)
                timed(per_round, k)
        return (time.perf_counter() - began) / (k + 1)


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
    results = []
    for even, odd in samples:
        m = Measurement.from_samples(even + odd)
        if odd:
            halves = tuple(Measurement.from_samples(h).value(config.statistic) for h in (even, odd))
            m = replace(m, halves=halves)
        results.append(m)
    return results


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


def reference_runner(config: MeasureConfig) -> Runner:
    """The fixed reference network (the ``mixnet_tiny`` preset) prepared for ``config``, for drift correction."""
    from mixnas.search_space.presets import resolve_arch

    arch = resolve_arch(REFERENCE_ARCH)
    with torch_threads(config.threads):
        return make_runner(build_network(arch), arch_input_shape(arch, config.batch_size), config)


def measure_reference(config: MeasureConfig, *, rounds: int = DEFAULT_ROUNDS) -> float:
    """``config.statistic`` of the reference network over ``3 * repeats`` runs (the drift baseline)."""
    longer = replace(config, repeats=3 * config.repeats)
    return measure_runners([reference_runner(config)], longer, rounds=rounds)[0].value(config.statistic)


def measure_archs(
    archs: Sequence[Any],
    config: MeasureConfig | None = None,
    *,
    rounds: int = DEFAULT_ROUNDS,
    chunk: int = 25,
    progress: Callable[[int, int], None] | None = None,
    reference_ms: float | None = None,
    references: Sequence[tuple[Any, float]] = (),
) -> list[Measurement]:
    """End-to-end latency of many architectures, interleaved in equal chunks of at most ``chunk`` networks.

    Interleaving inside a chunk spreads the machine's slow phases over all of its networks (and gives them one
    drift factor); chunking bounds the memory held by built networks and ONNX Runtime sessions.
    ``progress(done, total)`` is called per chunk.

    Drift correction: with ``reference_ms`` (the reference network's latency when the lookup table was started),
    the reference network is timed in every chunk too, and each measurement of the chunk gets ``drift =
    reference_ms / reference now`` (see :meth:`Measurement.value`). With ``references``, pairs of (architecture,
    its latency at the table's speed), all of them are timed in every chunk and ``drift`` is the median of their
    ratios, which is steadier than one network. On a shared machine whose speed drifts with other people's load
    this keeps measurements taken minutes apart comparable; on a dedicated device drift stays near 1.
    """
    config = config or MeasureConfig()
    with torch_threads(config.threads):
        if references:
            ref_runners = [
                make_runner(build_network(a), arch_input_shape(a, config.batch_size), config) for a, _ in references
            ]
            baselines = [float(ms) for _, ms in references]
        elif reference_ms is not None:
            ref_runners, baselines = [reference_runner(config)], [float(reference_ms)]
        else:
            ref_runners, baselines = [], []
    results: list[Measurement] = []
    size = math.ceil(len(archs) / math.ceil(len(archs) / chunk)) if archs else 1  # balanced chunks
    for start in range(0, len(archs), size):
        part = archs[start : start + size]
        with torch_threads(config.threads):
            runners = [make_runner(build_network(a), arch_input_shape(a, config.batch_size), config) for a in part]
        measured = measure_runners([*runners, *ref_runners], config, rounds=rounds)
        if ref_runners:
            ratios = sorted(b / m.value(config.statistic) for b, m in zip(baselines, measured[len(runners) :]))
            drift = _quantile(ratios, 0.5)
            results.extend(replace(m, drift=drift) for m in measured[: len(runners)])
        else:
            results.extend(measured)
        if progress is not None:
            progress(len(results), len(archs))
    return results
