"""Channel permutations (a GATHER of every channel in another order) folded into the weights of a
convolution next to them, before the layout pass.

PyTorch's PixelShuffle (DepthToSpace in CRD order) and PixelUnshuffle order the moved channels
(channel, block row, block column); TFLite's DEPTH_TO_SPACE and SPACE_TO_DEPTH order them (block
row, block column, channel), so the importer writes a channel GATHER beside the TFLite op. A
sub-pixel head computes those channels with a conv (ESPCN, EDSR, Real-ESRGAN's x1/x2 stems read
an unshuffled image with one): the conv's output channels (weights and bias) can be computed in
the gathered order instead, or, after the GATHER, its input channels read in the original order.
Exact (the same products and sums, reordered), and the file loses a GATHER per block.
"""
from __future__ import annotations

import numpy as np

from tflq.ir.graph import Graph, Layout, Op

WEIGHTED = ("CONV_2D",)  # weights OHWI (outputs axis 0, inputs axis 3) and a bias per output
# elementwise ops a reorder of channels commutes with (the conv's activation, not fused yet)
ELEMENTWISE = frozenset({"RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1", "TANH", "LOGISTIC",
                         "LEAKY_RELU", "HARD_SWISH", "ELU", "GELU", "ABS", "NEG", "SQUARE"})


def _permutation(graph: Graph, op: Op) -> np.ndarray | None:
    """The indices of a GATHER that reorders all channels of a 4-D NCHW tensor, else None."""
    if op.kind != "GATHER" or op.attrs.axis != 1 or not graph.is_constant(op.inputs[1]):
        return None
    x = graph.tensors[op.inputs[0]]
    indices = np.asarray(graph.tensors[op.inputs[1]].data).reshape(-1)
    if len(x.shape) != 4 or x.layout != Layout.NCHW or np.asarray(graph.tensors[op.inputs[1]].data).ndim != 1 \
            or indices.size != x.shape[1] or not np.array_equal(np.sort(indices), np.arange(x.shape[1])):
        return None
    return indices.astype(np.int64)


def _grouped(graph: Graph, conv: Op) -> bool:
    """A CONV_2D whose filter reads fewer input channels than its input has (groups > 1)."""
    return graph.tensors[conv.inputs[1]].shape[3] != graph.tensors[conv.inputs[0]].shape[-1] \
        if graph.tensors[conv.inputs[0]].layout != Layout.NCHW else \
        graph.tensors[conv.inputs[1]].shape[3] != graph.tensors[conv.inputs[0]].shape[1]


def fold_channel_permutations(graph: Graph) -> int:
    """Remove each channel-permuting GATHER whose input comes from a weighted op read by nothing
    else (its output channels reordered), or whose every reader is a weighted op (their input
    channels reordered). Returns how many were removed."""
    removed = 0
    for op in list(graph.ops):
        perm = _permutation(graph, op)
        if perm is None:
            continue
        x, y = op.inputs[0], op.outputs[0]
        producer, value = graph.producer(x), x
        while producer is not None and producer.kind in ELEMENTWISE and len(producer.inputs) == 1 \
                and len(graph.consumers(value)) == 1 and value not in graph.outputs:
            value = producer.inputs[0]
            producer = graph.producer(value)
        readers = graph.consumers(y)
        if producer is not None and producer.kind in WEIGHTED and graph.is_constant(producer.inputs[1]) \
                and len(graph.consumers(value)) == 1 and value not in graph.outputs \
                and graph.consumers(x) == [op] and x not in graph.outputs and y not in graph.outputs \
                and not _grouped(graph, producer) \
                and (len(producer.inputs) < 3 or not producer.inputs[2] or graph.is_constant(producer.inputs[2])):
            w = graph.tensors[producer.inputs[1]]
            producer.inputs[1] = graph.add_constant(f"{producer.inputs[1]}/permuted", w.data[perm])
            if len(producer.inputs) > 2 and producer.inputs[2]:
                b = graph.tensors[producer.inputs[2]]
                producer.inputs[2] = graph.add_constant(f"{producer.inputs[2]}/permuted", b.data[perm])
            graph.remove_op(op)
            graph.replace_uses(y, x)
            removed += 1
            continue
        if readers and y not in graph.outputs and all(
                r.kind in WEIGHTED and r.inputs[0] == y and y not in r.inputs[1:] and graph.is_constant(r.inputs[1])
                and not _grouped(graph, r) for r in readers):
            inverse = np.argsort(perm)
            for r in readers:
                w = graph.tensors[r.inputs[1]]
                r.inputs[1] = graph.add_constant(f"{r.inputs[1]}/permuted", w.data[..., inverse])
                r.inputs[0] = x
            graph.remove_op(op)
            removed += 1
    return removed
