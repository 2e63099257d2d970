"""Latency backends: how a part or a network is converted for a runtime, and how that runtime runs it.

A :class:`Backend` is registered once in :data:`BACKENDS`; its name is what ``--backend`` and ``latency.backend``
accept, and what a lookup table records. Every backend turns a torch module (a part of a network, a whole network,
the reference network) into the runtime's own model (:attr:`Backend.convert`) and that model into a *stage*, a
function from a backend input to a backend output (:attr:`Backend.load`), which the timing rules of
:mod:`.timing` run. Backends whose models are files (:attr:`Backend.file_suffix`) can also be timed by the
latency agent on another device, or written out for it (``export-layers``).

* ``torch``: eager PyTorch in ``eval()`` and ``inference_mode``, ``channels_last`` by default (MixConv's split /
  per-group depthwise / concat is much faster in that layout on CPU); on CUDA every run is followed by
  ``torch.cuda.synchronize()``. float32 only.
* ``executorch``: the mobile runtime (optional extra ``mixnas[executorch]``): ``torch.export``, lowered to the
  XNNPACK delegate, run by ExecuTorch's Python runtime on this CPU; ``int8`` through PT2E quantisation with
  XNNPACK's quantizer (:func:`to_pte`). ExecuTorch sets its thread pool once per process.
* ``onnxruntime``: the module is exported with the TorchScript exporter (``dynamo=False``; no onnxscript needed)
  and run on the CPU execution provider (the agent's session settings: ``intra_op_num_threads``, full graph
  optimisation, sequential execution). ``int8``: ONNX Runtime static quantisation of the exported model, QDQ
  format, per-channel int8 weights and uint8 activations (:func:`quantize_onnx`), after ONNX Runtime's
  pre-processing (shape inference and graph optimisation).

Every converting backend (all but ``torch``) converts the module as it is deployed (:func:`deployed_module`): a
copy with every batch norm folded into the convolutions before it, also after a MixConv with several kernel
groups or a grouped 1x1 convolution, where the converters' own folding does not reach (they fold a batch norm only
right after one ``Conv``). ``mixnas export`` converts the same way, so a table times what an export ships.

Precision ``int8`` needs calibration inputs (:func:`calibration_inputs`): images of the data set named by
``calibration_data`` (the experiment's data in a search), else a stand-in that the table records
(:data:`STAND_IN`). The ranges of a part are calibrated on the activations the parts before it produce from
those images (:func:`convert_pipeline`), so a part inside a network is quantised as it would be in the whole
network. Latency depends on shapes, not on the weights' values, but the calibration is kept honest all the same:
an export (``mixnas export --int8``) calibrates on the real data.

Steady allocator (torch backend, Linux / glibc): before the first torch measurement in a process,
:func:`steady_allocator` raises glibc malloc's mmap and trim thresholds, so activations of any size are reused
from the heap instead of being mapped (and page-faulted) afresh on every inference. glibc's own thresholds adapt
to the process's allocation history, which made the same network measure 28-47 ms in one process and 21 ms in
another (a 7 MB activation at 112x112); with the thresholds fixed, repeat measurements agree within ~5%.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import logging
import os
import platform
import sys
import tempfile
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Collection, Iterator, Sequence

from mixnas.errors import LatencyTableError
from mixnas.evaluators.latency.agent import AgentError, cpuinfo_field, first_line, import_onnxruntime, onnx_stage
from mixnas.evaluators.latency.timing import Stage

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

logger = logging.getLogger(__name__)

PRECISIONS = ("float32", "int8")
ONNX_OPSET = 17
CALIBRATION_IMAGES = 16
CALIBRATION_SEED = 1234
STAND_IN = f"stand-in: {CALIBRATION_IMAGES} seeded standard-normal images (no calibration data given)"
INT8_SCHEME = "onnxruntime static QDQ, per-channel int8 weights, uint8 activations, MinMax calibration"
REDUCED_RANGE = ", 7-bit weights (reduce_range: this x86 processor has no VNNI)"
EXECUTORCH_INT8_SCHEME = "ExecuTorch PT2E, XNNPACKQuantizer symmetric, per-channel int8 weights"
LITERT_INT8_SCHEME = "litert-torch PT2E, PT2EQuantizer symmetric, per-channel int8 weights, int8 input and output"


@dataclass(frozen=True)
class Backend:
    """One runtime: what it accepts and how it converts and runs a module.

    Attributes:
        name: the name users give (``--backend``, ``latency.backend``) and tables record.
        precisions: the precisions it can run (:data:`PRECISIONS`).
        devices: ``cpu``, and ``cuda`` where the runtime can use it.
        convert: ``(module, input_shape, config, calibration) -> model``: the runtime's form of a module in eval
            mode; ``calibration`` is a batch of inputs (int8) or None.
        load: ``(model, config) -> stage``.
        file_suffix: the suffix of the model's file where the model is bytes, else None.
        versions: the runtime's library versions, for the device metadata of a table.
        tensor_input: stages take torch tensors (else float32 numpy arrays).
        agent: the latency agent (``agent.py``) runs its files, over the network and offline.
        folds_batch_norms: its models are converted from the network with batch norms folded
            (:func:`deployed_module`); a table records it (``settings.folded_batch_norms``).
        input_variants: how many different inputs a measurement feeds in turn (:class:`InputRotation`), for a
            runtime that runs one input repeated faster than a stream of new ones; 1: one fixed input.
        int8_scheme: ``() -> str``: how it quantises to int8 on this machine (a table's
            ``settings.quantization``, an export's calibration record); None without int8.
        converts_in_child: a fresh measuring process (``measure.LocalTimer``) converts its models too, not only
            loads and times them. Only where the converter is safe to run in a forked child: litert-torch's MLIR
            (jaxlib) starts a thread pool when imported, and a child forked after that waited forever for its
            threads; those backends convert in the parent and send the models' bytes to the child.
        converter_modules: what a child's conversion imports, imported once in the parent before it forks
            (:func:`preload_converters`), so that no child imports them again.
    """

    name: str
    precisions: tuple[str, ...]
    devices: tuple[str, ...]
    convert: Callable[[Any, tuple[int, ...], Any, Any], Any]
    load: Callable[[Any, Any], Stage]
    file_suffix: str | None
    versions: Callable[[], dict[str, Any]]
    tensor_input: bool = False
    agent: bool = False
    folds_batch_norms: bool = False
    input_variants: int = 1
    int8_scheme: Callable[[], str] | None = None
    converts_in_child: bool = False
    converter_modules: tuple[str, ...] = ()

    def check(self, precision: str, device: str) -> None:
        """A :class:`LatencyTableError` naming what this backend allows when it cannot run ``precision`` on
        ``device``."""
        if precision not in PRECISIONS:
            raise LatencyTableError(f"precision: expected one of {list(PRECISIONS)}, got {precision!r}")
        if precision not in self.precisions:
            raise LatencyTableError(
                f"precision {precision!r} is not available with backend {self.name!r} (it runs "
                f"{', '.join(self.precisions)}); backends with {precision}: {backends_with(precision)}"
            )
        if device not in self.devices:
            raise LatencyTableError(f"device {device!r} is not supported by backend {self.name!r} "
                                    f"(devices: {list(self.devices)})")


# --- torch ----------------------------------------------------------------------------------------------------
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


def _torch_convert(module: torch.nn.Module, input_shape: tuple[int, ...], config: Any, calibration: Any) -> Any:
    import torch

    steady_allocator()
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LatencyTableError("device 'cuda' was requested but torch sees no CUDA device")
    module = module.eval().to(device)
    if config.channels_last:
        module = module.to(memory_format=torch.channels_last)
    return module


def _torch_load(module: Any, config: Any) -> Stage:
    if config.device != "cuda":
        return module
    import torch

    sync = torch.cuda.synchronize

    def run(x: Any) -> Any:
        y = module(x)
        sync()
        return y

    return run


def _torch_versions() -> dict[str, Any]:
    return {"steady_allocator": steady_allocator()}


# --- ONNX Runtime ---------------------------------------------------------------------------------------------
def require_onnxruntime() -> Any:
    """onnxruntime, or a :class:`LatencyTableError` naming the extra to install."""
    try:
        return import_onnxruntime()
    except AgentError:
        raise LatencyTableError(
            "the onnxruntime backend needs onnxruntime and onnx: pip install 'mixnas[onnx]'"
        ) from None


def export_onnx(module: torch.nn.Module, input_shape: Sequence[int], *, dynamic_batch: bool = False,
                fold_batch_norms: bool = True) -> bytes:
    """Serialise ``module`` (in eval mode, its batch norms folded: :func:`deployed_module`) to an ONNX model for
    one input of ``input_shape`` (with ``dynamic_batch``: any batch size, the first axis of ``input`` and
    ``output`` named ``batch``). ``fold_batch_norms=False`` exports the module as it is (for comparisons)."""
    import torch

    try:
        import onnx  # noqa: F401  (the legacy exporter needs it)
    except ImportError:
        raise LatencyTableError("exporting to ONNX needs onnx: pip install 'mixnas[onnx]'") from None
    module = deployed_module(module) if fold_batch_norms else module.eval()
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


def deployed_module(module: torch.nn.Module) -> torch.nn.Module:
    """What a converter converts: a copy of ``module`` in eval mode with its batch norms folded into the
    convolutions before them (:func:`mixnas.models.folding.fold_batch_norms`), as deployed."""
    from mixnas.models.folding import fold_batch_norms

    return fold_batch_norms(module)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime.quantization and litert_torch log advice on the root logger for every model; keep it out of the terminal."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


@functools.lru_cache(maxsize=1)
def int8_saturates() -> bool:
    """True on an x86-64 processor without VNNI (AVX2, or AVX-512 without VNNI; Linux's ``/proc/cpuinfo`` flags).

    There ONNX Runtime's fused uint8 x int8 kernels add products in pairs with 16-bit saturation, and a model
    with full 8-bit weights can lose accuracy: a conv / depthwise pair quantised on an AMD Zen 3 (onnxruntime
    1.32.0) was off by 15% of its output range, against 1.7% with 7-bit weights and 1.4% with 8-bit weights and
    the graph optimisations (the fused kernels) off. ONNX Runtime recommends ``reduce_range`` (7-bit weights) on such processors.
    """
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    flags = cpuinfo_field("flags")
    return flags is not None and not {"avx512_vnni", "avx_vnni"} & set(flags.split())


def onnx_int8_scheme() -> str:
    """:data:`INT8_SCHEME`, with :data:`REDUCED_RANGE` where :func:`quantize_onnx` uses 7-bit weights here."""
    return INT8_SCHEME + (REDUCED_RANGE if int8_saturates() else "")


def quantize_onnx(model: bytes, calibration: Sequence[np.ndarray], *, input_name: str = "input",
                  reduce_range: bool | None = None) -> bytes:
    """An int8 model of a float32 ONNX model: ONNX Runtime static quantisation (:data:`INT8_SCHEME`).

    ``calibration``: inputs of the model's input shape whose activation ranges set the quantisation scales.
    The model is pre-processed first (shape inference, graph optimisation: batch norm folded into the
    convolutions), as ONNX Runtime recommends, so that no float operator is left between quantised ones.
    ``reduce_range`` (7-bit weights; default: :func:`int8_saturates`) keeps this machine's ONNX Runtime from
    saturating; it changes the weights' values, not the operators or their speed.
    """
    if reduce_range is None:
        reduce_range = int8_saturates()
    require_onnxruntime()
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{input_name: x} for x in calibration])

        def get_next(self) -> dict[str, Any] | None:
            return next(self.items, None)

    with tempfile.TemporaryDirectory(prefix="mixnas-int8-") as tmp, _quiet_root_logger():
        source, prepared, target = (os.path.join(tmp, n) for n in ("float.onnx", "pre.onnx", "int8.onnx"))
        with open(source, "wb") as fh:
            fh.write(model)
        try:
            quant_pre_process(source, prepared, skip_symbolic_shape=True)
            quantize_static(prepared, target, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            reduce_range=reduce_range, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            extra_options={"CalibTensorRangeSymmetric": False})
        except Exception as exc:  # onnxruntime.quantization raises plain exceptions of many kinds
            raise LatencyTableError(f"int8 quantisation failed ({first_line(exc)})") from None
        with open(target, "rb") as fh:
            return fh.read()


def _onnx_convert(module: torch.nn.Module, input_shape: tuple[int, ...], config: Any, calibration: Any) -> bytes:
    require_onnxruntime()
    model = export_onnx(module, input_shape)
    if config.precision != "int8":
        return model
    return quantize_onnx(model, list(calibration))


def _onnx_load(model: bytes, config: Any) -> Stage:
    require_onnxruntime()
    try:
        return onnx_stage(model, config.threads)  # the agent's session settings
    except AgentError as exc:
        raise LatencyTableError(str(exc)) from None


def _onnx_versions() -> dict[str, Any]:
    return {"onnxruntime": require_onnxruntime().__version__}


# --- ExecuTorch (the mobile runtime; optional extra) ------------------------------------------------------
EXECUTORCH_EXTRA = "pip install 'mixnas[executorch]'"


def require_executorch() -> Any:
    """The ExecuTorch package, or a :class:`LatencyTableError` naming the extra to install."""
    try:
        import executorch
        import executorch.exir  # noqa: F401
    except ImportError:
        raise LatencyTableError(f"the executorch backend needs ExecuTorch: {EXECUTORCH_EXTRA}") from None
    return executorch


def to_pte(module: torch.nn.Module, input_shape: Sequence[int], precision: str,
           calibration: Sequence[Any] | None = None) -> bytes:
    """An ExecuTorch program (``.pte``) of ``module`` for one input of ``input_shape``, lowered to XNNPACK.

    float32: ``torch.export`` then ``to_edge_transform_and_lower`` with the XNNPACK partitioner. int8: PT2E
    quantisation first (XNNPACK's quantizer, symmetric, per-channel weights; ``prepare_pt2e``, the calibration
    inputs, ``convert_pt2e``), then the same lowering: what ExecuTorch documents for int8 on XNNPACK.
    """
    require_executorch()
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    module = deployed_module(module)
    example = (torch.zeros(*input_shape),)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if precision == "int8":
            module = _pt2e_quantized(module, example, _xnnpack_quantizer(), calibration)
        lowered = to_edge_transform_and_lower(torch.export.export(module, example),
                                              partitioner=[XnnpackPartitioner()])
        return bytes(lowered.to_executorch().buffer)


# XNNPACK quantizer patterns of a convolution followed by a training-mode batch norm (QAT graphs only)
TRAINING_BATCH_NORM_PATTERNS = frozenset({"conv_bn", "conv_bn_relu", "conv_transpose_bn", "conv_transpose_bn_relu"})


def _xnnpack_quantizer() -> Any:
    """XNNPACK's PT2E quantizer (symmetric, per-channel weights) that also gives each ``narrow`` (MixConv's channel
    groups under ``torch.export``, see ``models/layers.py``) its input's quantisation parameters, as it already does
    for ``slice``.

    Without this, a group's slice takes its consumer's parameters; XNNPACK refuses a slice whose input and output
    parameters differ, and the portable slice left outside splits the block into two delegates. executorch 1.5.1's
    ``ChannelsLastTaggedReshapePass`` then miswires the delegate holding the other slices (their NHWC offsets are
    applied to an NCHW input), which fails at run time ("Attempted to resize a static tensor", 0 channels).

    It also leaves out the conv-batch-norm patterns (:data:`TRAINING_BATCH_NORM_PATTERNS`): they match only the
    training-mode batch norm of a QAT graph, never a graph for post-training quantisation (whose batch norms
    :func:`deployed_module` has folded), yet executorch 1.5.1's quantizer traces their 12 pattern graphs with
    ``torch.export`` on every call: 40% of an int8 conversion (114 s -> 68 s for 18 `tiny` parts, every
    ``.pte`` byte-identical; ``tests/test_executorch.py``).
    """
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec
    from torchao.quantization.pt2e.quantizer.quantizer import Q_ANNOTATION_KEY

    class Quantizer(XNNPACKQuantizer):
        SUPPORTED_PATTERNS = [p for p in XNNPACKQuantizer.SUPPORTED_PATTERNS
                              if p.name not in TRAINING_BATCH_NORM_PATTERNS]

        def annotate(self, model: Any) -> Any:
            model = super().annotate(model)
            for node in model.graph.nodes:
                if node.op != "call_function" or node.target != torch.ops.aten.narrow.default:
                    continue
                source = node.args[0]
                annotation = source.meta.get(Q_ANNOTATION_KEY) if isinstance(source, torch.fx.Node) else None
                if annotation is None or annotation.output_qspec is None or Q_ANNOTATION_KEY in node.meta:
                    continue
                shared = SharedQuantizationSpec(source)
                node.meta[Q_ANNOTATION_KEY] = QuantizationAnnotation(
                    input_qspec_map={source: shared}, output_qspec=shared, _annotated=True)
            return model

    return Quantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))


def _pt2e_quantized(module: torch.nn.Module, example: tuple[Any, ...], quantizer: Any,
                    calibration: Sequence[Any] | None, **convert: Any) -> Any:
    """PT2E static quantisation of ``module`` with ``quantizer``, calibrated on ``calibration`` (else the example):
    ``torch.export``, ``prepare_pt2e``, the calibration inputs, ``convert_pt2e`` -- the step ExecuTorch's and
    LiteRT's int8 conversions share."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    prepared = prepare_pt2e(torch.export.export(module, example).module(), quantizer)
    for x in calibration if calibration is not None else [example[0].numpy()]:
        prepared(torch.from_numpy(_float32(x)))
    return convert_pt2e(prepared, **convert)


def _float32(x: Any) -> Any:
    import numpy as np

    return np.ascontiguousarray(x, dtype=np.float32)


@functools.cache
def _executorch_runtime(threads: int) -> Any:
    """ExecuTorch's runtime with its thread pool (XNNPACK's) set to ``threads``: once per process, before any
    program is loaded (resetting it after a run crashes the process)."""
    if _executorch_runtime.cache_info().currsize:
        raise LatencyTableError("executorch: its thread pool is set once per process; measure other thread counts "
                                "in another process")
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime

    portable_lib._unsafe_reset_threadpool(threads)
    return Runtime.get()


def executorch_runner(model: bytes | str, threads: int) -> Callable[[Any], Any]:
    """A function from a torch tensor to the first output of an ExecuTorch program (bytes or a ``.pte`` path).

    The program's bytes and the program object are kept alive with the method: the method reads their memory,
    and a dropped one made XNNPACK read garbage shapes ("Attempted to resize a static tensor").
    """
    require_executorch()
    program = _executorch_runtime(threads).load_program(model)
    method = program.load_method("forward")

    def run(x: Any, _keep: Any = (model, program, method)) -> Any:
        try:
            return method.execute([x])[0]
        except RuntimeError as exc:  # the runtime's own failure (its log names the operator), as one line
            raise LatencyTableError(
                f"ExecuTorch could not run a converted model ({first_line(exc)}); the runtime's log names the "
                "operator") from None

    return run


def _executorch_convert(module: torch.nn.Module, input_shape: tuple[int, ...], config: Any, calibration: Any) -> bytes:
    return to_pte(module, input_shape, config.precision, calibration)


def _executorch_load(model: bytes, config: Any) -> Stage:
    return executorch_runner(model, config.threads)


def _executorch_versions() -> dict[str, Any]:
    from importlib.metadata import version

    require_executorch()
    return {"executorch": version("executorch"), "delegate": "xnnpack"}


# --- LiteRT (TensorFlow Lite; optional extra) -----------------------------------------------------------------
LITERT_EXTRA = "pip install 'mixnas[litert]'"


def require_litert() -> Any:
    """litert_torch (the converter), or a :class:`LatencyTableError` naming the extra to install."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import ai_edge_litert.interpreter  # noqa: F401
        import litert_torch
    except ImportError:
        raise LatencyTableError(f"the litert backend needs LiteRT and its torch converter: {LITERT_EXTRA}") from None
    return litert_torch


def to_tflite(module: torch.nn.Module, input_shape: Sequence[int], precision: str,
              calibration: Sequence[Any] | None = None) -> bytes:
    """A LiteRT (``.tflite``) model of ``module`` for one input of ``input_shape`` (NCHW, as the torch module takes).

    float32: ``litert_torch.convert``. int8: PT2E static quantisation first with litert_torch's quantizer
    (symmetric, per-channel weights; ``prepare_pt2e``, the calibration inputs, ``convert_pt2e``), then the same
    conversion with that quantizer: what litert-torch documents for a fully quantised model.
    """
    litert_torch = require_litert()
    import torch

    module = deployed_module(module)
    example = (torch.zeros(*input_shape),)
    options: dict[str, Any] = {}
    with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), _quiet_root_logger(), \
            _quiet_stderr_fd():
        warnings.simplefilter("ignore")  # the converter prints its progress and warns at length
        if precision == "int8":
            from litert_torch.quantize import pt2e_quantizer
            from litert_torch.quantize.quant_config import QuantConfig

            quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
                pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True))
            module = _pt2e_quantized(module, example, quantizer, calibration, fold_quantize=False)
            options["quant_config"] = QuantConfig(pt2e_quantizer=quantizer)
        try:
            return bytes(litert_torch.convert(module, example, **options).model_content())
        except Exception as exc:  # the converter raises errors of many kinds
            raise LatencyTableError(f"LiteRT conversion failed ({first_line(exc)})") from None


@contextlib.contextmanager
def _quiet_stderr_fd() -> Iterator[None]:
    """The converter's C++ code logs a line per model to file descriptor 2 (absl); send it to /dev/null meanwhile.
    Its failures still surface as Python exceptions."""
    try:
        saved = os.dup(2)
    except OSError:  # no usable descriptor 2
        yield
        return
    try:
        sys.stderr.flush()
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


INPUT_VARIANTS = 64
INPUT_VARIANTS_BYTES = 32 << 20  # at most this much memory for the inputs of one rotation (224 px: 55 images)


@dataclass(frozen=True)
class InputRotation:
    """Several inputs of one shape that a stage takes in turn, one per run (:attr:`Backend.input_variants`).

    A deployed network meets a new frame every run. LiteRT's kernels (ai-edge-litert 2.3.0, XNNPACK) branch on the
    data, and the processor learns those branches when one input is repeated: int8 `tiny` networks took 1.0-1.8x
    as long on 64 inputs in turn as on one repeated input, a float32 one 1.23x, while ONNX Runtime changed by at most
    1% (docs/latency.md, run AB). A cycle of 8 inputs is still partly learnt; 64 and 256 time alike. A table
    records the count (``settings.input_variants``). A stage that does not know this type never receives it.
    """

    inputs: tuple[Any, ...]


def varied_inputs(input_shape: Sequence[int], config: Any, count: int) -> InputRotation:
    """Up to ``count`` inputs of ``input_shape`` (fewer where they would pass :data:`INPUT_VARIANTS_BYTES`, at least
    2) for a measurement that rotates them: images of ``config.calibration_data`` for int8 (what the deployed
    network sees, scaled as its calibration was), else seeded standard-normal noise. The same object for equal
    arguments: every pipeline of a chunk shares one rotation (40 networks at 224 px would otherwise hold 1.3 GB)."""
    return _varied_inputs(tuple(int(d) for d in input_shape), config.precision, config.calibration_data, count)


@functools.lru_cache(maxsize=4)
def _varied_inputs(shape: tuple[int, ...], precision: str, calibration_data: str | None, count: int) -> InputRotation:
    import numpy as np

    size = 4 * int(np.prod(shape))
    count = max(2, min(count, INPUT_VARIANTS_BYTES // max(size, 1)))
    if precision == "int8" and calibration_data is not None and len(shape) == 4:
        images = calibration_inputs(calibration_data, shape, count)
        return InputRotation(tuple(np.ascontiguousarray(x) for x in images))
    rng = np.random.default_rng(0)
    return InputRotation(tuple(rng.standard_normal(shape, dtype=np.float32) for _ in range(count)))


def litert_runner(model: bytes, threads: int) -> Callable[[Any], Any]:
    """A function from a float32 numpy input to the first output of a LiteRT model, on LiteRT's interpreter
    (XNNPACK on the CPU, ``threads`` threads). The model's bytes are kept alive with the interpreter."""
    require_litert()
    from ai_edge_litert.interpreter import Interpreter

    import numpy as np

    interpreter = Interpreter(model_content=model, num_threads=threads)
    interpreter.allocate_tensors()
    source = interpreter.get_input_details()[0]
    target = interpreter.get_output_details()[0]["index"]
    dtype, (scale, zero) = np.dtype(source["dtype"]), source["quantization"]
    set_tensor, invoke, get_tensor, index = interpreter.set_tensor, interpreter.invoke, interpreter.get_tensor, \
        source["index"]
    last: list[Any] = [None, None]  # the latest input of another type and its converted form, made once per input

    def convert(x: Any) -> Any:
        if np.issubdtype(dtype, np.integer):  # a float input to a quantised model
            info = np.iinfo(dtype)
            return np.clip(np.rint(x / (scale or 1.0)) + zero, info.min, info.max).astype(dtype)
        # an int8 part's output into a part whose input the quantizer left in float (litert-torch 0.10 does so for
        # parts that end or begin at a residual addition): its scale is the other model's, so the values are only
        # cast; latency does not depend on them
        return x.astype(dtype)

    turn = [0]
    # a rotation's inputs in the model's type, converted once each (a stage only ever meets the one rotation of its
    # input shape: varied_inputs returns the same object for it)
    rotated: dict[int, Any] = {}

    def run(x: Any, _keep: Any = (model, interpreter)) -> Any:
        if isinstance(x, InputRotation):  # the first stage of a measurement: the next input, converted once
            i = turn[0] = (turn[0] + 1) % len(x.inputs)
            if i not in rotated:
                v = x.inputs[i]
                rotated[i] = convert(v) if v.dtype != dtype else v
            x = rotated[i]
        elif x.dtype != dtype:  # an input of another type than the model's (an int8 part's output passes as is)
            if x is not last[0]:
                last[:] = [x, convert(x)]
            x = last[1]
        set_tensor(index, x)
        invoke()
        return get_tensor(target)

    return run


def _litert_convert(module: torch.nn.Module, input_shape: tuple[int, ...], config: Any, calibration: Any) -> bytes:
    return to_tflite(module, input_shape, config.precision, calibration)


def _litert_load(model: bytes, config: Any) -> Stage:
    return litert_runner(model, config.threads)


def _litert_versions() -> dict[str, Any]:
    from importlib.metadata import version

    require_litert()
    return {"ai-edge-litert": version("ai-edge-litert"), "litert-torch": version("litert-torch")}


# --- the registry ---------------------------------------------------------------------------------------------
BACKENDS: dict[str, Backend] = {
    "torch": Backend("torch", ("float32",), ("cpu", "cuda"), _torch_convert, _torch_load, None, _torch_versions,
                     tensor_input=True),
    "onnxruntime": Backend("onnxruntime", ("float32", "int8"), ("cpu",), _onnx_convert, _onnx_load, ".onnx",
                           _onnx_versions, agent=True, folds_batch_norms=True, int8_scheme=onnx_int8_scheme,
                           converts_in_child=True,
                           converter_modules=("onnx", "torch.onnx", "onnxruntime.quantization")),
    "executorch": Backend("executorch", ("float32", "int8"), ("cpu",), _executorch_convert, _executorch_load, ".pte",
                          _executorch_versions, tensor_input=True, folds_batch_norms=True,
                          int8_scheme=lambda: EXECUTORCH_INT8_SCHEME),
    "litert": Backend("litert", ("float32", "int8"), ("cpu",), _litert_convert, _litert_load, ".tflite",
                      _litert_versions, folds_batch_norms=True, input_variants=INPUT_VARIANTS,
                      int8_scheme=lambda: LITERT_INT8_SCHEME),
}
BACKEND_NAMES = tuple(BACKENDS)


@functools.lru_cache(maxsize=None)
def preload_converters(name: str) -> None:
    """Import backend ``name``'s :attr:`~Backend.converter_modules` here, once (one that is not installed is left
    to the conversion, which names the extra). A fresh process forked per measurement then starts with them:
    ``onnxruntime.quantization`` alone took 1.1 s to import in each."""
    import importlib

    for module in get_backend(name).converter_modules:
        with contextlib.suppress(ImportError), _quiet_root_logger():
            importlib.import_module(module)


def get_backend(name: str) -> Backend:
    """The backend registered as ``name``; an unknown name is an error listing the known ones."""
    try:
        return BACKENDS[name]
    except (KeyError, TypeError):
        raise LatencyTableError(f"unknown latency backend {name!r}: expected one of {list(BACKENDS)}") from None


def backends_with(precision: str) -> list[str]:
    return [b.name for b in BACKENDS.values() if precision in b.precisions]


# --- calibration inputs ---------------------------------------------------------------------------------------
def calibration_inputs(data: str | None, input_shape: Sequence[int], count: int = CALIBRATION_IMAGES) -> np.ndarray:
    """``count`` inputs of ``input_shape`` (batch included) for int8 calibration, stacked on a new first axis.

    ``data``: a data set as the proxy trainer reads it (``digits``, an image folder, an IDX / CIFAR / npz file;
    :class:`~mixnas.data.spec.DataSpec`), resized to the input's resolution and normalised by the chosen
    images' channel statistics; None: the stand-in (:data:`STAND_IN`).
    """
    import numpy as np

    shape = tuple(int(d) for d in input_shape)
    if data is None:
        rng = np.random.default_rng(CALIBRATION_SEED)
        return rng.standard_normal((count, *shape), dtype=np.float32)
    return _data_inputs(data, shape, count)


@functools.lru_cache(maxsize=8)
def _data_inputs(data: str, shape: tuple[int, ...], count: int) -> np.ndarray:
    import numpy as np

    from mixnas.data.spec import DataSpec

    from mixnas.data.load import load_images

    if len(shape) != 4 or shape[1] != 3 or shape[2] != shape[3]:
        raise LatencyTableError(f"calibration data: expected an image input (batch, 3, side, side), got {shape}")
    batch, _, side, _ = shape
    images = load_images(DataSpec(source=data, resolution=side)).images  # uint8 (n, side, side, c)
    if images.shape[3] == 1:
        images = np.repeat(images, 3, axis=3)
    need = count * batch
    order = np.random.default_rng(CALIBRATION_SEED).permutation(len(images))
    chosen = images[np.resize(order, need)].astype(np.float32) / 255.0
    mean = chosen.mean(axis=(0, 1, 2))
    std = np.maximum(chosen.std(axis=(0, 1, 2)), 1e-3)
    x = ((chosen - mean) / std).transpose(0, 3, 1, 2).astype(np.float32)
    return np.ascontiguousarray(x.reshape(count, batch, 3, side, side))


def _forward(module: torch.nn.Module, inputs: np.ndarray) -> np.ndarray:
    """``module`` (float32 torch, eval) on every input of ``inputs`` (stacked on the first axis)."""
    import numpy as np
    import torch

    count, batch = inputs.shape[:2]
    with torch.inference_mode():
        out = module.eval()(torch.from_numpy(np.ascontiguousarray(inputs.reshape(count * batch, *inputs.shape[2:]))))
    return out.numpy().reshape(count, batch, *out.shape[1:])


def convert_pipeline(pipeline: Sequence[Any], config: Any, skip: Collection[str] = ()) -> Iterator[tuple[Any, Any]]:
    """``(stage spec, runtime model)`` for every stage of ``pipeline`` (:class:`~.measure.StageSpec`) whose key is
    not in ``skip`` (converted once per key).

    For int8, every stage is calibrated on the activations that the float32 stages before it produce from the
    calibration inputs (:func:`calibration_inputs` of ``config.calibration_data``), as in the whole network.
    """
    backend = get_backend(config.backend)
    int8 = config.precision == "int8"
    inputs = calibration_inputs(config.calibration_data, pipeline[0].input_shape) if int8 and pipeline else None
    done = set(skip)
    for i, spec in enumerate(pipeline):
        convert = spec.key not in done
        later = int8 and any(s.key not in done and s.key != spec.key for s in pipeline[i + 1:])
        if not convert and not later:
            continue
        module = spec.build()
        if convert:
            done.add(spec.key)
            yield spec, backend.convert(module, spec.input_shape, config, inputs)
        if later:
            inputs = _forward(module, inputs)
