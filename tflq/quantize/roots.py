"""Before calibration: a division by a square root (x / sqrt(v), RMSNorm's and a decomposed
LayerNorm's) as a multiplication by the reciprocal root (x * rsqrt(v)) where the quantized type
has an integer RSQRT kernel that takes the root's input, so the norm runs integer."""
from __future__ import annotations

from tflq import ops as registry
from tflq.ir.dtypes import DType
from tflq.ir.graph import Graph, Op
from tflq.ir.quant import activation_params
from tflq.ops.base import Refused
from tflq.targets import get_target, island_dtype
from tflq.targets.base import Target


def rsqrt_runs_integer(dtype: DType, target: str | Target = "litert") -> bool:
    """Whether RSQRT runs integer in a `dtype` model on a non-negative input's grid: LiteRT's int8
    RSQRT (asymmetric: such a grid starts at its zero point; in a uint8 model, as an int8 island
    where the target takes one: tflq.targets.island_dtype), where the target runs it, not its
    int16 one (a symmetric grid holds negative values, which elementwise.cc refuses at invoke)."""
    spec = registry.spec("RSQRT")
    dtype = island_dtype(target, "RSQRT", dtype) or dtype
    if not spec.quant.runs_in(dtype) or get_target(target).integer_reason("RSQRT", dtype) is not None:
        return False
    refusal = spec.integer_refusal
    return refusal is None or refusal.values != Refused.NEGATIVE or \
        int(activation_params(dtype, 0.0, 1.0).zero_point) == dtype.qmin


def divisions_by_roots_as_rsqrt(graph: Graph, dtype: DType, target: str | Target = "litert") -> int:
    """DIV(x, SQRT(v)) -> MUL(x, RSQRT(v)) for float tensors, where rsqrt_runs_integer(dtype, target).

    As a DIV, the quantized model kept it float: div.cc refuses a divisor holding its zero point,
    which a computed divisor's grid always holds. RSQRT of v on v's grid and an integer MUL then
    run integer: an RMSNorm between int8 MatMuls, worst sample against onnxruntime 22.1 -> 23.6 dB
    (20.6 -> 22.1 with zero rows in calibration, where RSQRT's range reaches 1/sqrt(eps) and it
    and its MUL stay float: plan.py's wide scale factors). In int16 RSQRT would stay float and
    its 1/std be requantized for the MUL (int16x8 with zero rows: 41.1 -> 33.2 dB), so the DIV
    is left. A SQRT read elsewhere too stays for those readers. Returns the rewrites."""
    if not rsqrt_runs_integer(dtype, target):
        return 0
    count = 0
    for op in list(graph.ops):
        if op.kind != "DIV" or op.attrs.fused_activation != "NONE":
            continue
        root = graph.producer(op.inputs[1])
        if root is None or root.kind != "SQRT" or \
                not all(graph.tensors[n].dtype.is_float for n in op.inputs + root.inputs):
            continue
        s = graph.tensors[root.outputs[0]]
        inverse = graph.add_activation(f"{s.name}/rsqrt", s.dtype, s.shape, s.layout)
        graph.insert_after(root, Op("RSQRT", list(root.inputs), [inverse], origin=root.origin))
        index = graph.ops.index(op)
        graph.remove_op(op)
        graph.add_op(Op("MUL", [op.inputs[0], inverse], list(op.outputs), op.attrs, op.origin), index)
        if not graph.consumers(s.name) and s.name not in graph.outputs:
            graph.remove_op(root)
        count += 1
    if count:
        graph.remove_unused()
    return count
