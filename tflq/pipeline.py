"""convert(config) -> ConversionReport: load, normalise, lay out, fuse, quantize, write. No logic of its own."""
from __future__ import annotations

import dataclasses
import os
import time
from collections import Counter

from tflq.backend.tflite_writer import serialize
from tflq.calibration.parallel import start_workers_for, workers_exit_later
from tflq.fileio import Source, WritePolicy
from tflq.config import ConvertConfig, Mode, dtype_name
from tflq.errors import InvalidConfigError
from tflq.frontend.conv_branches import merge_policy
from tflq.passes.channels import fold_channel_permutations
from tflq.frontend.onnx_loader import float16_interface_to_float32, load_onnx
from tflq.ir.dtypes import DType
from tflq.ir.graph import Graph, Op
from tflq.ir.verify import verify
from tflq.memory import release_freed_memory
from tflq.passes.sink import fewer_transposes_by_sinking
from tflq.passes.cleanup import (hoist_transpose_through_row_op, merge_transposes,
                                  one_transpose_per_chain, remove_dead_ops, remove_noop_ops,
                                  sink_transpose_through_reshape, sink_transpose_through_unary,
                                  transposes_of_unit_axes_to_reshapes)
from tflq.passes.equalize import EQUALIZED_DESCRIPTION
from tflq.passes.fuse import (divisions_by_constants_to_multiplications, fold_affine_into_producer,
                              fuse_activations)
from tflq.passes.layout import channels_last_1d_io, to_nhwc
from tflq.passes.manager import fixed_point
from tflq.passes.one_d import cancel_height_reshapes, sink_height_squeezes, spread_ncw
from tflq.ir.qdq import QdqModel
from tflq.mode import resolve_mode, unused_option_notes
from tflq.ops.conv3d import conv_3d_as_conv_2d
from tflq.ops.pool import average_pools_as_depthwise, clamps_as_max_pools, max_pool_pads_as_same
from tflq.ops.activations import relu_0_to_1_as_relu
from tflq.quantize.masks import (finite_mask_fills, mask_fills_apart, selected_zeros_as_constants,
                                 subtracted_masks_added)
from tflq.quantize.qdq import simplify_qdq_graph
from tflq.quantize.repair import equalize_if_asked
from tflq.quantize.roots import divisions_by_roots_as_rsqrt
from tflq.report import ConversionReport
from tflq.targets import get_target


def prepare_graph(config: ConvertConfig) -> tuple[Graph, ConversionReport]:
    """Everything before quantization: the fused NHWC float graph that the output file describes."""
    graph, report, _, _ = _prepare(config, write_policy(config))
    return graph, report


def write_policy(config: ConvertConfig) -> WritePolicy:
    """Every file this conversion writes, checked against every file it reads (before any work)."""
    sources = [Source("the input model", config.model)]
    sources += [Source("statistics given with --stats", s) for s in config.stats]
    if isinstance(config.calib, (str, os.PathLike)):
        sources.append(Source("calibration data", os.fspath(config.calib)))
    if isinstance(config.eval_data, (str, os.PathLike)):
        sources.append(Source("evaluation data given with --eval-data", os.fspath(config.eval_data)))
    policy = WritePolicy({"--output": config.output, "--save-stats": config.save_stats,
                          "--report": config.report, "--html": config.html}, sources)
    policy.check()
    return policy


def _prepare(config: ConvertConfig, policy: WritePolicy
             ) -> tuple[Graph, ConversionReport, ConvertConfig, QdqModel | None]:
    """prepare_graph, plus the config with its mode settled and the model's QDQ facts (if any)."""
    branches = merge_policy(float_file=config.mode in (None, Mode.FLOAT, Mode.FLOAT16),
                            per_channel_weights=config.dtype != DType.UINT8)
    loaded = load_onnx(config.model, config.input_shapes, config.max_tensor_bytes, branches)
    release_freed_memory()  # (the ONNX model's copies of the weights)
    policy.add_sources(Source("external data of the input model", p) for p in loaded.external_files)
    policy.check()
    graph = loaded.graph
    qdq = loaded.qdq
    config, mode_note = resolve_mode(config, qdq)
    if config.io_type is not None and config.mode == Mode.FULL:
        float16_interface_to_float32(graph)  # the 8-bit interface replaces a float16 one
    if qdq is not None:
        simplify_qdq_graph(graph)
    report = ConversionReport(model=config.model, output=config.output, mode=config.mode.value,
                              dtype=None if config.mode in (Mode.FLOAT, Mode.FLOAT16)
                              else dtype_name(config.dtype),
                              input_bytes=_file_size(config.model),
                              notes=list(loaded.notes) + ([mode_note] if mode_note else [])
                              + unused_option_notes(config))
    own_transposes = _transposes(graph)  # the model's own (its Transpose nodes, as imported)
    # NORMALIZE: 1-D convolution stacks stay 4-D (height 1) between their ops
    fixed_point(graph, [sink_height_squeezes, cancel_height_reshapes, spread_ncw])
    fold_channel_permutations(graph)  # PixelShuffle's CRD order into the conv beside it
    to_nhwc(graph, keep_io_layout=config.keep_io_layout)
    report.notes.extend(channels_last_1d_io(graph))
    fixed_point(graph, [
        # FUSE: BatchNorm (MUL/ADD, or DIV) into convolutions, then activations into producers
        divisions_by_constants_to_multiplications, fold_affine_into_producer,
        fuse_activations,
        # CLEANUP: move the remaining transposes until they cancel, drop what does nothing. A run
        # of reshapes and transposes collapses before a transpose sinks out of it through a unary
        # op (Segformer's NHWC depthwise conv -> NCHW -> flatten -> tokens -> GELU: sunk first,
        # the run lost its last transpose and both stayed)
        sink_transpose_through_reshape, one_transpose_per_chain, sink_transpose_through_unary,
        hoist_transpose_through_row_op, merge_transposes, remove_noop_ops, remove_dead_ops])
    # detection heads: the per-level transposes carried to where they meet (kept if fewer)
    fewer_transposes_by_sinking(graph)
    # the transposes left that move only size-1 axes (once none can cancel) are RESHAPEs
    fixed_point(graph, [transposes_of_unit_axes_to_reshapes, remove_noop_ops])
    # what the layout change left behind, not what it inserted before the cleanup removed most
    report.transposes_inserted = sum(not any(op is own for own in own_transposes)
                                     for op in _transposes(graph))
    # LOWER: 3-D convolutions as CONV_2D over depth-stacked channels (LiteRT's CONV_3D is float
    # only, ungrouped, not delegated: slower even in float)
    conv_3d_as_conv_2d(graph)
    verify(graph, after="float passes")
    # REPAIR: cross-layer equalization (the statistics are for the equalized graph)
    report.equalization = equalize_if_asked(graph, config, qdq)
    if config.mode == Mode.FULL:  # calibration needs finite sums: a -inf mask as finfo.min
        selected_zeros_as_constants(graph)  # Where(g != 0, fill, g) as Where(g != 0, fill, 0)
        subtracted_masks_added(graph)  # scores - fill x gate as scores + (-fill) x gate
        finite_mask_fills(graph)
        mask_fills_apart(graph)  # each mask's fill its own constant, scores beside the masks
        if qdq is None:  # (a QDQ model's grids are the Sqrt's and the Div's)
            divisions_by_roots_as_rsqrt(graph, config.dtype, config.target)  # RMSNorm's x / sqrt(v)
    return graph, report, config, qdq


def _transposes(graph: Graph) -> list[Op]:
    """The graph's TRANSPOSE ops (compared by identity: one the passes rewrote is a new one)."""
    return [op for op in graph.ops if op.kind == "TRANSPOSE"]


def convert(config: ConvertConfig) -> ConversionReport:
    """Convert config.model; write config.output (atomically) when given. Raises TflqError."""
    with workers_exit_later():  # they exit while the rest of the conversion runs
        return _convert(config)


def _convert(config: ConvertConfig) -> ConversionReport:
    start = time.perf_counter()
    policy = write_policy(config)
    if config.html:
        from tflq.analysis.convert_report import check_report_request

        check_report_request(config)
    start_workers_for(config)  # its workers start up while the model loads
    graph, report, config, qdq = _prepare(config, policy)
    if config.mode == Mode.WEIGHTS_ONLY:
        from tflq.quantize.repair import correct_biases_if_asked
        from tflq.quantize.weights import UINT8_SPEED_NOTE, quantize_weights

        report.bias_correction = correct_biases_if_asked(graph, config, qdq)  # (biases stay float)
        report.weights = quantize_weights(graph, config, qdq)
        if config.dtype == DType.UINT8 and report.weights:
            report.notes.append(UINT8_SPEED_NOTE)
    elif config.mode == Mode.FULL:
        from tflq.quantize.full import quantize_full

        quantize_full(graph, config, report, qdq, write=policy.write)
    elif config.mode == Mode.FLOAT16:
        from tflq.quantize.float16 import unused_calibration_note, store_float16

        report.notes.extend(store_float16(graph, get_target(config.target)).notes() +
                            unused_calibration_note(config))
    # BACKEND: a max pool's explicit padding as SAME padding where the runtime makes that cheaper
    target = get_target(config.target)
    max_pool_pads_as_same(graph, extend_convolutions=target.fuses_pad_into_conv)
    if "RELU_0_TO_1" in target.integer_as:  # TFLite Micro: 8-bit clamps to [0, 1] as RELUs
        relu_0_to_1_as_relu(graph)
    if target.default_delegate is not None:
        # what XNNPACK has no 8-bit kernel for, as ops it has: an 8-bit RELU as a 1x1 max pool,
        # an average pool as a depthwise convolution
        delegated = get_target(target.default_delegate).delegate.integer_kinds
        clamps_as_max_pools(graph, delegated)
        if average_pools_as_depthwise(graph, delegated, frozenset(config.float_ops)):
            pools = {op.origin for op in graph.ops if op.kind == "AVERAGE_POOL_2D"}
            report.float_ops = [f for f in report.float_ops
                                if f.kind != "AVERAGE_POOL_2D" or f.origin in pools]
    verify(graph, after="quantization")
    _describe_io(graph, report)
    equalized = report.equalization is not None and bool(report.equalization.pairs)
    release_freed_memory()  # before the writer's two model-sized blocks (builder, bytes)
    data = serialize(graph, description=EQUALIZED_DESCRIPTION if equalized else "tflq")
    if config.target != "litert":
        from tflq.checker import require_target

        report.notes.extend(require_target(graph, data, get_target(config.target)))
    if config.output:
        policy.write("--output", data)
    report.tflite = data
    report.output_bytes = len(data)
    report.op_counts = dict(Counter(op.kind for op in graph.ops))
    report.tensor_types = dict(Counter(t.dtype.name.lower() for t in graph.tensors.values()
                                       if not t.is_constant))
    report.seconds = time.perf_counter() - start
    if config.html:
        from tflq.analysis.convert_report import calibration_report

        policy.write("--html", calibration_report(config, data, report))
    if config.report:
        policy.write("--report", (report.to_json() + "\n").encode())
    return report


def _describe_io(graph: Graph, report: ConversionReport) -> None:
    """One summary line per model input and output not described yet: its type in the file
    (integer and boolean inputs such as token ids and masks keep their ONNX type)."""
    described = {line.split("'")[1] for line in report.io if "'" in line}
    for label, names in (("input", graph.inputs), ("output", graph.outputs)):
        for name in names:
            if name not in described:
                t = graph.tensors[name]
                report.io.append(f"{label} '{name}': {t.dtype.name.lower()} {list(t.shape)}")


def calibrate_only(config: ConvertConfig) -> ConversionReport:
    """Calibrate config.model on config.calib and write the statistics to config.save_stats (one
    shard of a job array; `tflq convert --stats ...` merges the files). Raises TflqError."""
    from tflq.calibration.run import collect_statistics

    start = time.perf_counter()
    if config.calib is None or not config.save_stats:
        raise InvalidConfigError("calibration alone needs calibration data and a statistics file")
    config = dataclasses.replace(config, mode=Mode.FULL, output=None, stats=(),
                                 equalize=bool(config.equalize))  # see equalize_by_default
    policy = write_policy(config)
    start_workers_for(config)  # its workers start up while the model loads
    graph, report, config, _ = _prepare(config, policy)
    with workers_exit_later():  # (while the statistics are written)
        collect_statistics(graph, config, report, write=policy.write)
    report.seconds = time.perf_counter() - start
    return report


def _file_size(path: str) -> int:
    """Size of the ONNX file (external data files not included)."""
    return os.path.getsize(path)
