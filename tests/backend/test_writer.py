"""The writer: identical quantization vectors are shared, and the file still loads and reads back."""
from __future__ import annotations

import numpy as np

from tests.conftest import litert_interpreter
from tflq.backend.tflite_reader import read_tflite
from tflq.backend.tflite_writer import serialize
from tflq.ir.dtypes import DType
from tflq.ir.graph import Graph, Op, Tensor
from tflq.ir.quant import QuantParams, symmetric_weight_params
from tflq.ops.conv import ConvAttrs


def _two_convs() -> Graph:
    rng = np.random.default_rng(0)
    g = Graph()
    g.add_tensor(Tensor("x", DType.FLOAT32, (1, 4, 4, 8)))
    g.inputs.append("x")
    prev = "x"
    for k in range(2):
        w = rng.normal(size=(8, 1, 1, 8)).astype(np.float32)
        params = symmetric_weight_params(w, 0)
        wq = g.add_tensor(Tensor(f"w{k}", DType.INT8, w.shape, params.quantize(w), params)).name
        b = g.add_constant(f"b{k}", np.zeros(8, np.float32))
        out = g.add_activation(f"y{k}", DType.FLOAT32, (1, 4, 4, 8))
        g.add_op(Op("CONV_2D", [prev, wq, b], [out], ConvAttrs()))
        prev = out
    g.outputs.append(prev)
    return g


def test_per_channel_vectors_are_shared_and_read_back():
    g = _two_convs()
    data = serialize(g)
    info = read_tflite(data)
    for k in range(2):
        t = info.tensor(f"w{k}")
        assert t.zero_point == [0] * 8 and t.quantized_dimension == 0
        np.testing.assert_allclose(t.scale, g.tensors[f"w{k}"].quant.scale)
    positions = _zero_point_vector_positions(data, ["w0", "w1"])
    assert len(positions) == 2 and positions[0] == positions[1]  # one shared vector
    assert serialize(g) == data  # deterministic
    interpreter = litert_interpreter(data)  # hybrid convs: the file loads and runs
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], np.ones((1, 4, 4, 8), np.float32))
    interpreter.invoke()


def _zero_point_vector_positions(data: bytes, names: list[str]) -> list[int]:
    """Where in the file each named tensor's zero-point vector starts (raw FlatBuffers access)."""
    from tflq._generated.tflite.Model import Model

    subgraph = Model.GetRootAs(data, 0).Subgraphs(0)
    positions = []
    for i in range(subgraph.TensorsLength()):
        t = subgraph.Tensors(i)
        if t.Name().decode() in names:
            q = t.Quantization()
            positions.append(q._tab.Vector(q._tab.Offset(10)))  # field 3 (zero_point): 4 + 2 * 3
    return positions


def test_quantization_params_keep_their_own_values():
    g = _two_convs()
    g.tensors["w1"].quant = QuantParams.per_channel(DType.INT8, np.full(8, 0.5), np.zeros(8), 0)
    info = read_tflite(serialize(g))
    assert info.tensor("w1").scale == [0.5] * 8
    assert info.tensor("w0").scale != [0.5] * 8
