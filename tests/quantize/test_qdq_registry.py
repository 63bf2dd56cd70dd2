"""Every quantizable op case of the registry as a QDQ model: a QuantizeLinear/DequantizeLinear pair
after each float tensor (on a grid covering the values it takes), converted without calibration.

The op must run in 8 bits; the file's model inputs must be quantized, and its outputs dequantized,
on exactly the graph's grids; and LiteRT must agree with onnxruntime's run of the QDQ graph within
the op's error budget (tests/ops/test_quantized_ops.py's STEPS, or the case's quant_steps where its
lowering computes more, plus one step for a requantization
where a kernel's grid differs from the graph's).

An ONNX op that tflq lowers into several TFLite ops whose intermediate tensors only calibration can
give a range to (BatchNormalization on its own, HardSigmoid, LayerNormalization) keeps those ops
float without --calib, and is fully quantized with it.
"""
from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from tests.conftest import case_model, run_litert, run_onnxruntime, save_model
from tests.delegation import WRITTEN_IN_8_BIT
from tests.ops.test_quantized_ops import (PLAIN_TYPES, STEPS, _quantizable_cases,
                                          _refused_input_is_computed)
from tests.quantize.qdq_graphs import activation_params
from tflq.backend.tflite_reader import ModelInfo, read_tflite
from tflq.config import ConvertConfig
from tflq.ir.dtypes import DType
from tflq.pipeline import convert

DTYPES = {"int8": np.int8, "uint8": np.uint8}
CASES = [(spec, case, dtype) for spec, case in _quantizable_cases() for dtype in DTYPES
         if spec.quant.runs_in(DType.parse(dtype))]
IDS = [f"{spec.kind}-{case.name}-{dtype}" for spec, case, dtype in CASES]


def _float_values(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every value the float model computes (graph inputs and node outputs), by name."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    names = [o for node in model.graph.node for o in node.output if o]
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names)
    values = dict(zip(names, run_onnxruntime(probe, inputs)))
    values.update(inputs)
    return values


def qdq_version(model: onnx.ModelProto, inputs: dict[str, np.ndarray], dtype) -> tuple[
        onnx.ModelProto, dict[str, tuple[float, int]]]:
    """The model with a QDQ pair after every float activation; returns it and the grids."""
    values = _float_values(model, inputs)
    graph = model.graph
    constants = {init.name for init in graph.initializer}
    grids: dict[str, tuple[float, int]] = {}
    nodes, inits = [], list(graph.initializer)

    def pair(name: str, fake: str) -> None:
        value = values[name]
        scale, zero_point = activation_params(float(value.min()), float(value.max()), dtype)
        s, z = f"{name}/qdq_scale", f"{name}/qdq_zero_point"
        inits.extend([numpy_helper.from_array(np.array(scale, np.float32), s),
                      numpy_helper.from_array(np.array(zero_point, dtype), z)])
        nodes.append(helper.make_node("QuantizeLinear", [name, s, z], [f"{name}/q"]))
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}/q", s, z], [fake]))
        grids[fake] = (scale, zero_point)

    renamed: dict[str, str] = {}
    outputs = {o.name for o in graph.output}
    for name, value in inputs.items():
        if value.dtype.kind == "f":
            renamed[name] = f"{name}/dq"
            pair(name, renamed[name])
    for node in graph.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.input[:] = [renamed.get(n, n) for n in node.input]
        floats = [o for o in node.output if o and o not in constants and values[o].dtype.kind == "f"]
        copy.output[:] = [f"{o}/raw" if o in floats else o for o in node.output]
        nodes.append(copy)
        for o in floats:
            fake = o if o in outputs else f"{o}/dq"
            renamed[o] = fake
            values[f"{o}/raw"] = values[o]
            pair(f"{o}/raw", fake)
    qdq = helper.make_graph(nodes, graph.name, list(graph.input), list(graph.output), inits)
    result = helper.make_model(qdq, opset_imports=list(model.opset_import))
    result.ir_version = model.ir_version
    return result, grids


def _check_io_grids(info: ModelInfo, grids: dict[str, tuple[float, int]], inputs, outputs) -> None:
    """Model inputs are quantized, and outputs dequantized, on the graph's own grids."""
    by_name = {t.name: t for t in info.tensors}
    for name in inputs:
        index = by_name[name].index
        quantize = next(op for op in info.ops if op.kind == "QUANTIZE" and op.inputs[0] == index)
        t = info.tensors[quantize.outputs[0]]
        assert (np.float32(t.scale[0]), t.zero_point[0]) == \
            (np.float32(grids[f"{name}/dq"][0]), grids[f"{name}/dq"][1]), name
    for name in outputs:
        index = by_name[name].index
        dequantize = next(op for op in info.ops if op.kind == "DEQUANTIZE" and op.outputs[0] == index)
        t = info.tensors[dequantize.inputs[0]]
        assert (np.float32(t.scale[0]), t.zero_point[0]) == (np.float32(grids[name][0]), grids[name][1])


@pytest.mark.parametrize("spec,case,dtype", CASES, ids=IDS)
def test_qdq_case(spec, case, dtype, tmp_path):
    float_model = case_model(case)
    model, grids = qdq_version(float_model, case.inputs, DTYPES[dtype])
    path = save_model(model, tmp_path / "qdq.onnx")
    report = convert(ConvertConfig(model=path, **case.options))
    assert (report.mode, report.dtype) == ("full", dtype), report.to_text()
    # DIV by a computed divisor stays float: its grid holds the zero point LiteRT refuses
    refused = _refused_input_is_computed(spec, case)
    kept = [op for op in report.float_ops if refused and op.kind == spec.kind and "at invoke" in op.reason]
    if len(report.float_ops) > len(kept):
        values = {n for node in model.graph.node for n in list(node.input) + list(node.output)}
        for op in report.float_ops:
            if op in kept:
                continue
            tensor = re.search(r"leaves '([^']+)' float", op.reason)
            assert tensor and tensor.group(1) not in values, report.to_text()
        report = convert(ConvertConfig(model=path, calib=[case.inputs], **case.options))
    assert [op.kind for op in report.float_ops] == ([spec.kind] if refused else []), report.to_text()
    info = read_tflite(report.tflite)
    # (not one on plain integers alone: ScatterND's count of the written positions)
    ops = [op for op in info.ops if op.kind in (spec.kind, WRITTEN_IN_8_BIT.get(spec.kind, spec.kind)) and
           any(info.tensors[t].dtype not in PLAIN_TYPES for t in op.inputs + op.outputs if t >= 0)]
    wanted = "float32" if refused else dtype
    runs = [info.tensors[op.outputs[0] if info.tensors[op.outputs[0]].dtype not in PLAIN_TYPES
                         else op.inputs[0]] for op in ops]  # an index result: its data input is 8-bit
    assert ops and all(t.dtype == wanted for t in runs), info.op_kinds()
    float_inputs = [n for n, v in case.inputs.items() if v.dtype.kind == "f"]
    if not refused:  # (a float DIV reads the float inputs as they are)
        _check_io_grids(info, grids, float_inputs, [o.name for o in model.graph.output if o.name in grids])
    expected = run_onnxruntime(model, case.inputs)
    actual = run_litert(report.tflite, list(case.inputs.values()))
    budget = (case.quant_steps or STEPS[type(spec.quant)]) + \
        (1 if any("requantized" in n for n in report.notes) else 0)
    for e, a, output in zip(expected, actual, model.graph.output):
        if output.name not in grids:  # an integer result of the QDQ graph: exact
            assert np.array_equal(e, a), (e, a)
            continue
        step = grids[output.name][0]
        assert e.shape == a.shape
        assert np.max(np.abs(e - a)) / step <= budget * 1.0001, np.max(np.abs(e - a)) / step
