"""The writer: identical quantization vectors are shared, and the file still loads and reads back."""
from __future__ import annotations

import numpy as np

from tests.conftest import litert_interpreter
from tflq import ops as registry
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


def _constants_graph(values: dict[str, np.ndarray]) -> Graph:
    """A graph that ADDs each constant to its input (so every constant is written)."""
    g = Graph()
    for k, (name, value) in enumerate(values.items()):
        x = g.add_activation(f"x{k}", DType.from_numpy(value.dtype), value.shape)
        g.inputs.append(x)
        g.add_tensor(Tensor(name, DType.from_numpy(value.dtype), value.shape, value))
        y = g.add_activation(f"y{k}", DType.from_numpy(value.dtype), value.shape)
        g.add_op(Op("ADD", [x, name], [y], registry.spec("ADD").Attrs()))
        g.outputs.append(y)
    return g


def _buffer_of(data: bytes, name: str) -> int:
    from tflq._generated.tflite.Model import Model

    subgraph = Model.GetRootAs(data, 0).Subgraphs(0)
    return next(subgraph.Tensors(i).Buffer() for i in range(subgraph.TensorsLength())
                if subgraph.Tensors(i).Name().decode() == name)


def test_constants_share_a_buffer_exactly_when_their_bytes_are_equal(monkeypatch):
    """Identical constants are written once; constants of the same size that differ in one byte
    are not, even when their digests collide (the bytes are compared, not only hashed)."""
    import tflq.backend.tflite_writer as writer

    base = np.arange(64, dtype=np.float32).reshape(8, 8)
    other = base.copy()
    other[7, 7] = -1.0
    values = {"a": base, "b": base.copy(), "c": other, "d": base.T.copy().T}  # d: Fortran order
    for colliding in (False, True):
        if colliding:
            class _SameDigest:
                def __init__(self, *args, **kwargs):
                    pass

                def digest(self):
                    return b"\0" * 16

            monkeypatch.setattr(writer.hashlib, "blake2b", _SameDigest)
        data = serialize(_constants_graph(values))
        buffers = {name: _buffer_of(data, name) for name in values}
        assert buffers["a"] == buffers["b"] == buffers["d"] != buffers["c"]
        info = read_tflite(data)
        for name, value in values.items():
            np.testing.assert_array_equal(info.tensor(name).data, value)


def test_writing_leaves_the_graph_constants_as_they_were():
    """The buffers are written from views of the constants: the arrays keep their values,
    a big-endian or float64-held constant is written little-endian in its tensor's type."""
    big_endian = np.arange(6, dtype=">i4").reshape(2, 3)
    held_wide = np.linspace(-1, 1, 6).reshape(2, 3)  # float64 data of a float32 tensor
    g = _constants_graph({"e": big_endian.astype(np.int32)})
    g.tensors["e"].data = big_endian
    g2 = _constants_graph({"w": held_wide.astype(np.float32)})
    g2.tensors["w"].data = held_wide
    for graph, name, expected in ((g, "e", big_endian.astype("<i4")), (g2, "w", held_wide.astype(np.float32))):
        before = graph.tensors[name].data.copy()
        info = read_tflite(serialize(graph))
        np.testing.assert_array_equal(info.tensor(name).data, expected)
        assert graph.tensors[name].data.dtype == before.dtype
        np.testing.assert_array_equal(graph.tensors[name].data, before)
