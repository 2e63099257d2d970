"""Latency of parts and whole networks on the local device, and the one end-to-end measurement path.

*How* models are timed is :mod:`.timing` (warm-up, interleaved rounds over a minimum time span, clocks, summary
statistics; the latency agent bundles the same module). *With what* is a backend of :mod:`.backends` (torch eager,
ONNX Runtime float32 or int8). *Where* pipelines of stages are timed is a :class:`Timer`: :class:`LocalTimer`
(this process) or :class:`~mixnas.evaluators.latency.remote.RemoteTimer` (an agent on the target device).
:func:`measure_archs` is the one end-to-end path, for a search's trials, ``latency measure``, validation and
calibration alike, and the parts of the lookup table are timed in context by the same timers
(:func:`~mixnas.evaluators.latency.profile.profile_archs`).

Each measurement warms up, then times many single inferences and keeps summary statistics (10th percentile,
median, mean, standard deviation, inter-quartile range, minimum). With one CPU thread the clock is the calling
thread's CPU time (``time.thread_time_ns``; both backends compute on the calling thread then), so time the
operating system gives to other processes is not counted; otherwise it is ``time.perf_counter_ns`` (see
:attr:`MeasureConfig.clock`). The value the lookup table and the validation use is
:attr:`MeasureConfig.statistic`, by default the minimum: other processes only add time, so the fastest runs
track the undisturbed latency where the mean and even the median follow the machine's load. Several networks
are timed in alternating rounds, so slow phases of the machine are spread evenly over all of them.

As in MnasNet (Tan et al., CVPR 2019, §5: single-thread big core of a Pixel 1, batch 1), the defaults are one
thread and batch size 1.
"""

from __future__ import annotations

import contextlib
import math
import statistics
from collections import OrderedDict
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Iterable, Iterator, Mapping, Protocol, Sequence

from mixnas import bounds
from mixnas.errors import LatencyTableError
from mixnas.evaluators.latency.agent import host_info
from mixnas.evaluators.latency.backends import (
    STAND_IN,
    convert_pipeline,
    get_backend,
    preload_converters,
    varied_inputs,
)
from mixnas.evaluators.latency.timing import (
    CLOCKS,
    STATISTICS,
    FreshProcessError,
    Stage,
    Timing,
    TimingError,
    check_count,
    fresh_process_available,
    in_fresh_process,
    random_input,
    summarize,
    time_pipelines,
)
from mixnas.search_space.arch import MAX_RESOLUTION
from mixnas.torch_runtime import torch_threads

if TYPE_CHECKING:  # pragma: no cover
    import torch

DEFAULT_REPEATS = 100
DEFAULT_ROUNDS = 20
DEFAULT_MIN_SECONDS = 4.0
# the most bytes of converted models a LocalTimer keeps for later calls (backends that convert in this process)
CONVERTED_CACHE_BYTES = 512 * 2**20
# The range of every numeric measurement setting (mixnas.bounds): checked by MeasureConfig, used by the command
# line's options and the experiment's latency section. Upper bounds are sanity limits: torch crashes on absurd thread
# counts, a huge batch cannot be allocated, a measurement of hours per network never ends a profile.
MEASURE_RANGES = {"threads": bounds.THREADS, "batch_size": bounds.integer(1, 1024),
                  "repeats": bounds.integer(1, 10**6), "warmup": bounds.integer(0, 10**6),
                  "min_seconds": bounds.number(0, 3600)}
_REFERENCE_RESOLUTION = bounds.integer(1, MAX_RESOLUTION)


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
            0.14-0.24% per network. See :func:`~mixnas.evaluators.latency.timing.rounds_until`.
        precision: ``float32`` or ``int8`` (:data:`~mixnas.evaluators.latency.backends.PRECISIONS`), where the
            backend runs it (``onnxruntime``: static QDQ quantisation).
        calibration_data: int8 only: the data set whose images calibrate the quantisation (``digits``, a path;
            see :func:`~mixnas.evaluators.latency.backends.calibration_inputs`); None: a stated stand-in.
        reference_resolution: the input resolution of the drift reference network (None: its own, 32 px); a
            table profiled at a larger resolution times it at that one (:func:`reference_resolution`).
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
    precision: str = "float32"
    calibration_data: str | None = None
    reference_resolution: int | None = None

    def __post_init__(self) -> None:
        backend = get_backend(self.backend)
        for name, rng in MEASURE_RANGES.items():
            try:
                rng.check(getattr(self, name), name)
            except ValueError as exc:
                raise LatencyTableError(str(exc)) from None
        if self.device not in ("cpu", "cuda"):
            raise LatencyTableError(f"device: expected 'cpu' or 'cuda', got {self.device!r}")
        if self.statistic not in STATISTICS:
            raise LatencyTableError(f"statistic: expected one of {list(STATISTICS)}, got {self.statistic!r}")
        if self.clock not in CLOCKS:
            raise LatencyTableError(f"clock: expected one of {list(CLOCKS)}, got {self.clock!r}")
        if self.clock == "thread" and (self.threads != 1 or self.device != "cpu"):
            raise LatencyTableError("clock 'thread' measures one CPU thread: use it only with threads 1 on the CPU")
        backend.check(self.precision, self.device)
        if self.calibration_data is not None:
            if self.precision != "int8":
                raise LatencyTableError("calibration_data: only int8 needs calibration images; drop it for "
                                        f"precision {self.precision!r}")
            if not isinstance(self.calibration_data, str) or not self.calibration_data:
                raise LatencyTableError(f"calibration_data: expected a data set ('digits', a path), got "
                                        f"{self.calibration_data!r}")
        if self.reference_resolution is not None:
            try:
                _REFERENCE_RESOLUTION.check(self.reference_resolution, "reference_resolution")
            except ValueError as exc:
                raise LatencyTableError(str(exc)) from None

    @property
    def resolved_clock(self) -> str:
        """The clock actually used: ``auto`` resolved to ``thread`` or ``wall``."""
        if self.clock != "auto":
            return self.clock
        return "thread" if self.threads == 1 and self.device == "cpu" else "wall"

    def to_dict(self) -> dict[str, Any]:
        """The settings a table records (``calibration_data`` of an int8 table: the data set, or the stand-in;
        ``input_variants`` where the backend rotates inputs)."""
        out = {**asdict(self), "clock": self.resolved_clock}
        backend = get_backend(self.backend)
        if self.precision == "int8":
            out["calibration_data"] = self.calibration_data or STAND_IN
            out["quantization"] = backend.int8_scheme()
        else:
            del out["calibration_data"]
        if self.reference_resolution is None:
            del out["reference_resolution"]
        if backend.folds_batch_norms:
            out["folded_batch_norms"] = True
        if backend.input_variants > 1:
            out["input_variants"] = backend.input_variants
        return out


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


# --- device metadata ------------------------------------------------------------------------------------------
def device_metadata(config: MeasureConfig) -> dict[str, Any]:
    """Where and with what a measurement was taken: CPU / GPU model, library versions, platform."""
    import torch

    meta: dict[str, Any] = {**host_info(), "torch": torch.__version__, **get_backend(config.backend).versions()}
    if config.device == "cuda" and torch.cuda.is_available():
        meta["accelerator"] = torch.cuda.get_device_name()
    return meta


def make_input(input_shape: Sequence[int], config: MeasureConfig) -> Any:
    """A random (seeded) input of ``input_shape`` in the form ``config``'s backend takes; for a backend that
    rotates inputs (:attr:`~.backends.Backend.input_variants`), an :class:`~.backends.InputRotation`."""
    if len(input_shape) < 1 or any(int(d) < 1 for d in input_shape):
        raise LatencyTableError(f"input shape: expected positive dimensions, got {tuple(input_shape)}")
    backend = get_backend(config.backend)
    if backend.input_variants > 1:
        return varied_inputs(input_shape, config, backend.input_variants)
    x = random_input(tuple(int(d) for d in input_shape))
    if not backend.tensor_input:
        return x
    import torch

    t = torch.from_numpy(x).to(config.device)
    if config.backend == "torch" and config.channels_last and t.dim() == 4:
        t = t.contiguous(memory_format=torch.channels_last)
    return t


def _torch_context(threads: int) -> Callable[[], ContextManager[Any]]:
    """What every timed run happens in: torch on ``threads`` threads, in inference mode."""

    @contextlib.contextmanager
    def context() -> Iterator[None]:
        import torch

        with torch_threads(threads), torch.inference_mode():
            yield

    return context


def timing_settings(config: MeasureConfig, rounds: int) -> Timing:
    """The timing rules' form of ``config``'s settings (what a measure request to an agent carries)."""
    return Timing(
        warmup=config.warmup,
        repeats=config.repeats,
        rounds=check_positive("rounds", rounds),
        min_seconds=float(config.min_seconds),
        clock=config.resolved_clock,
        statistic=config.statistic,
        threads=config.threads,
    )


def check_positive(name: str, value: Any) -> int:
    """``value`` when it is a positive integer (``rounds``, ``chunk``, ``-n``), else a :class:`LatencyTableError`
    naming it (:func:`~mixnas.evaluators.latency.timing.check_count`, the one range check of counts)."""
    try:
        return check_count(name, value)
    except TimingError as exc:
        raise LatencyTableError(str(exc)) from None


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
    """Times pipelines on this machine with ``config``'s backend.

    A backend that converts modules for its runtime (``onnxruntime``, ``executorch``, ``litert``) loads and times
    each call's pipelines in a child process forked for the call (``fresh_process``, the default where
    ``os.fork`` exists; :func:`~mixnas.evaluators.latency.timing.in_fresh_process`), and converts them there too
    where that is safe (:attr:`~.backends.Backend.converts_in_child`): sessions loaded late in a long process
    run slower, unevenly, and a whole profile is one long process (docs/latency.md, run AF).
    The torch backend, and every backend where fork is unavailable, times in this process, keeping the ``limit``
    latest prepared stages.

    A backend that converts here (``executorch``, ``litert``: seconds a part) converts each key once per timer:
    the converted models are kept (:class:`ConvertedModels`, up to ``cache_bytes``) for the timer's later calls,
    so the chunks of a profile or a validation convert a part met in many networks once instead of in every
    chunk. An int8 part keeps the quantisation parameters of the first network it was converted in, which
    change no operator the runtime runs.
    """

    def __init__(self, limit: int = 512, *, fresh_process: bool | None = None,
                 cache_bytes: int = CONVERTED_CACHE_BYTES) -> None:
        self.limit = limit
        self.stages: OrderedDict[str, Stage] = OrderedDict()
        self.fresh_process = fresh_process_available() if fresh_process is None else fresh_process
        self.converted = ConvertedModels(cache_bytes)

    def device(self, config: MeasureConfig) -> dict[str, Any]:
        return device_metadata(config)

    def _stages(self, pipeline: Pipeline, config: MeasureConfig) -> list[Stage]:
        """The prepared stages of ``pipeline``, each converted when first needed; the cache never holds more
        than ``limit`` (a stage is dropped as soon as the limit is passed: live runtime sessions cost memory, and
        a profile that kept ~900 of them alive at once instead of 512 timed its parts up to 3% differently)."""
        backend = get_backend(config.backend)
        fresh = convert_pipeline(pipeline, config, skip=set(self.stages))
        converted: dict[str, Any] = {}
        here: dict[str, Stage] = {}  # a key met twice in one pipeline is one stage, even if dropped meanwhile
        for spec in pipeline:
            stage = here.get(spec.key) or self.stages.pop(spec.key, None)
            if stage is None:
                while spec.key not in converted:
                    try:
                        done, model = next(fresh)
                    except StopIteration:  # dropped from the cache since this pipeline began: convert it again
                        fresh = convert_pipeline(pipeline, config, skip=set(here) | set(converted))
                        continue
                    converted[done.key] = model
                stage = backend.load(converted.pop(spec.key), config)
            here[spec.key] = self.stages[spec.key] = stage  # most recently used last
            self.stages.move_to_end(spec.key)
            while len(self.stages) > self.limit:
                self.stages.popitem(last=False)
        return [here[spec.key] for spec in pipeline]

    def time(self, pipelines: Sequence[Pipeline], config: MeasureConfig, *, rounds: int) -> Timed:
        settings = timing_settings(config, rounds)
        if self.fresh_process and get_backend(config.backend).file_suffix is not None:
            pooled, seconds = _time_in_fresh_process(pipelines, config, settings, self.converted)
        else:
            with torch_threads(config.threads):
                runs = [([s.key for s in p], self._stages(p, config), make_input(p[0].input_shape, config))
                        for p in pipelines]
            pooled, seconds = time_pipelines(runs, settings, _torch_context(config.threads))
        return {k: _pooled_measurement(even, odd, config.statistic) for k, (even, odd) in pooled.items()}, seconds


class ConvertedModels:
    """Converted models by stage key, the least recently used dropped beyond ``max_bytes`` (of ``bytes`` models;
    other models count as nothing). Keys are signatures for parts, so a key names one model for a given config;
    a :class:`LocalTimer` holds one per timer, for one config at a time."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.models: OrderedDict[str, Any] = OrderedDict()
        self.size = 0
        self.config: MeasureConfig | None = None

    def for_config(self, config: MeasureConfig) -> ConvertedModels:
        """This cache, emptied first if it holds another config's models."""
        if config != self.config:
            self.models.clear()
            self.size, self.config = 0, config
        return self

    def get(self, key: str) -> Any | None:
        if key in self.models:
            self.models.move_to_end(key)
        return self.models.get(key)

    def put(self, key: str, model: Any) -> None:
        if key in self.models:
            self.size -= _nbytes(self.models.pop(key))
        self.models[key] = model
        self.size += _nbytes(model)
        while self.size > self.max_bytes and self.models:
            self.size -= _nbytes(self.models.popitem(last=False)[1])


def _nbytes(model: Any) -> int:
    return len(model) if isinstance(model, (bytes, bytearray)) else 0


def _time_in_fresh_process(pipelines: Sequence[Pipeline], config: MeasureConfig, settings: Timing,
                           converted: ConvertedModels) -> tuple[dict[str, tuple[list[float], list[float]]], float]:
    """:class:`LocalTimer`'s fresh-process path: convert here (each key once: ``converted`` keeps them for later
    calls) or there (:attr:`.Backend.converts_in_child`), load and time there (:func:`_time_fresh`); the pooled
    runs and round seconds, as :func:`time_pipelines` gives."""
    backend = get_backend(config.backend)
    models: dict[str, Any] = {}
    if backend.converts_in_child:
        preload_converters(config.backend)
    else:  # converted here, loaded and timed there
        cache = converted.for_config(config)
        with torch_threads(config.threads):
            for pipeline in pipelines:
                for spec in pipeline:
                    kept = cache.get(spec.key) if spec.key not in models else None
                    if kept is not None:
                        models[spec.key] = kept
                for spec, m in convert_pipeline(pipeline, config, skip=models):
                    models[spec.key] = m
                    cache.put(spec.key, m)
    try:
        done = in_fresh_process(lambda: _time_fresh(pipelines, config, settings, models))
    except FreshProcessError as exc:
        raise (TimingError if exc.kind == "TimingError" else LatencyTableError)(exc.message) from None
    return {k: (even, odd) for k, (even, odd) in done["pooled"].items()}, done["seconds"]


def _time_fresh(pipelines: Sequence[Pipeline], config: MeasureConfig, settings: Timing,
                models: Mapping[str, Any]) -> dict[str, Any]:
    """:class:`LocalTimer`'s work in a fresh process: load (and convert, where ``models`` lacks them) and time
    ``pipelines``; JSON-ready results.

    torch runs on one thread here whatever ``config.threads`` says (the runtime takes its own threads from it):
    a forked child must not enter an OpenMP parallel region that its parent's thread pool may have left behind.
    """
    backend = get_backend(config.backend)
    loaded: dict[str, Stage] = {k: backend.load(m, config) for k, m in models.items()}
    runs = []
    with torch_threads(1):
        for pipeline in pipelines:
            for spec, model in convert_pipeline(pipeline, config, skip=set(loaded)):
                loaded[spec.key] = backend.load(model, config)
            runs.append(([s.key for s in pipeline], [loaded[s.key] for s in pipeline],
                         make_input(pipeline[0].input_shape, config)))
        pooled, seconds = time_pipelines(runs, settings, _torch_context(1))
    return {"pooled": {k: [even, odd] for k, (even, odd) in pooled.items()}, "seconds": seconds}


def _pooled_measurement(even: Sequence[float], odd: Sequence[float], statistic: str) -> Measurement:
    m = Measurement.from_samples([*even, *odd])
    if not odd:
        return m
    halves = tuple(Measurement.from_samples(h).value(statistic) for h in (even, odd))
    return replace(m, halves=halves)


# --- public measurement API ----------------------------------------------------------------------------------
def measure_interleaved(
    items: Sequence[tuple[torch.nn.Module, Sequence[int]]],
    config: MeasureConfig | None = None,
    *,
    rounds: int = DEFAULT_ROUNDS,
) -> list[Measurement]:
    """Latency of several ``(module, input_shape)`` pairs, timed in alternating rounds on this machine."""
    config = config or MeasureConfig()
    specs = [StageSpec(f"module{i}", (lambda m=m: m), tuple(int(d) for d in shape)) for i, (m, shape) in
             enumerate(items)]
    measured, _ = LocalTimer(limit=len(specs)).time([[s] for s in specs], config, rounds=rounds)
    return [measured[s.key] for s in specs]


def measure_module(
    module: torch.nn.Module, input_shape: Sequence[int], config: MeasureConfig | None = None, *,
    rounds: int = DEFAULT_ROUNDS,
) -> Measurement:
    """Latency of one inference of ``module`` on an input of ``input_shape`` (batch dimension included)."""
    return measure_interleaved([(module, input_shape)], config, rounds=rounds)[0]


def arch_input_shape(arch: Any, batch_size: int) -> tuple[int, int, int, int]:
    """Input shape ``(batch, 3, resolution, resolution)`` of an architecture."""
    return (batch_size, 3, arch.resolution, arch.resolution)


def build_network(arch: Any) -> torch.nn.Module:
    """The whole network of ``arch`` in eval mode (:func:`mixnas.models.build`)."""
    from mixnas.models import build

    return build(arch).eval()


REFERENCE_ARCH = "mixnet_tiny"


def network_spec(arch: Any, batch_size: int, key: str | None = None) -> StageSpec:
    """A whole network as a one-stage pipeline (key ``net:<arch id>`` unless given)."""
    return StageSpec(key or f"net:{arch.id}", lambda: build_network(arch), arch_input_shape(arch, batch_size))


def reference_arch(resolution: int | None = None) -> Any:
    """The fixed reference network for drift correction (the ``mixnet_tiny`` preset), at ``resolution`` (its
    own 32 px for None)."""
    from mixnas.search_space.presets import resolve_arch

    arch = resolve_arch(REFERENCE_ARCH)
    return arch if resolution is None or resolution == arch.resolution else arch.replace(resolution=resolution)


def reference_spec(config: MeasureConfig) -> StageSpec:
    """:func:`reference_arch` at ``config.reference_resolution``, to time."""
    arch = reference_arch(config.reference_resolution)
    own = arch.resolution == reference_arch().resolution
    return network_spec(arch, config.batch_size,
                        key=f"reference:{REFERENCE_ARCH}" if own else f"reference:{REFERENCE_ARCH}@{arch.resolution}")


def reference_resolution(archs: Iterable[Any]) -> int | None:
    """The resolution at which a table of ``archs`` times its drift reference: their largest (None: the
    reference's own, also for no architectures).

    A reference much smaller than the networks beside it reads their footprint as drift: at its own 32 px
    (0.23 ms in int8 on an AMD Zen 3), timed beside 224-px `mixnet` networks it ran 8% slower than alone, and
    the profile rescaled every part and calibration network of a 224-px table by that much: the table predicted
    networks 6-15% faster than they ran alone (docs/latency.md, run AG).
    """
    own = reference_arch().resolution
    largest = max((a.resolution for a in archs), default=own)
    return None if largest == own else largest


def with_reference_for(config: MeasureConfig, archs: Iterable[Any]) -> MeasureConfig:
    """``config`` with its drift reference at :func:`reference_resolution` of ``archs``, unless it sets one."""
    if config.reference_resolution is not None:
        return config
    return replace(config, reference_resolution=reference_resolution(archs))


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
    this keeps measurements taken minutes apart comparable; on a dedicated device drift stays near 1. The
    references are prepared anew in every chunk, beside the networks they correct (:func:`_drift_spec`).
    """
    config = config or MeasureConfig()
    if references:
        ref_archs, baselines = [a for a, _ in references], [float(ms) for _, ms in references]
    elif reference_ms is not None:
        ref_archs, baselines = [None], [float(reference_ms)]
    else:
        ref_archs, baselines = [], []
    size = math.ceil(len(archs) / math.ceil(len(archs) / chunk)) if archs else 1  # balanced chunks
    timer = timer or LocalTimer(limit=size + len(ref_archs))  # holds one chunk and its references
    results: list[Measurement] = []
    for start in range(0, len(archs), size):
        part = enumerate(archs[start : start + size], start)
        specs = [network_spec(a, config.batch_size, key=f"net{i}:{a.id}") for i, a in part]
        ref_specs = [_drift_spec(a, i, start, config) for i, a in enumerate(ref_archs)]
        measured, _ = timer.time([[s] for s in [*specs, *ref_specs]], config, rounds=rounds)
        drift = 1.0
        if ref_specs:
            ratios = sorted(b / measured[s.key].value(config.statistic) for b, s in zip(baselines, ref_specs))
            drift = statistics.median(ratios)
        results.extend(replace(measured[s.key], drift=drift) for s in specs)
        if progress is not None:
            progress(len(results), len(archs))
    return results


def _drift_spec(arch: Any | None, i: int, start: int, config: MeasureConfig) -> StageSpec:
    """A drift reference (``arch``, or the reference network for None) prepared anew for the chunk at ``start``.

    Prepared once and reused, a reference ages differently from the networks beside it: in a process that
    has loaded many int8 ONNX Runtime sessions, a session loaded later runs slower (the same 10 `tiny` networks
    loaded again after 100 others: 1.07-1.10x, while sessions kept from the start slowed by 1.00-1.04x; no
    session option, allocator setting or moving quantisation to another process changed it). Kept across
    chunks, the references missed most of that, and a validation's later chunks read 8% slower than its first
    (docs/latency.md, run AE). A :class:`LocalTimer` now times every chunk in a fresh process, where its
    references are new anyway; a timer that keeps one process (an in-process one, a custom one) still needs this.
    """
    if arch is None:
        spec = reference_spec(config)
        return replace(spec, key=f"{spec.key}@{start}")
    return network_spec(arch, config.batch_size, key=f"drift{i}@{start}:{arch.id}")


def measure_arch(
    arch: Any, config: MeasureConfig | None = None, *, rounds: int = DEFAULT_ROUNDS, timer: Timer | None = None
) -> Measurement:
    """End-to-end latency of one :class:`~mixnas.search_space.arch.Architecture` (:func:`measure_archs`)."""
    return measure_archs([arch], config, rounds=rounds, timer=timer)[0]
