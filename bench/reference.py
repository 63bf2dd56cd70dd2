"""A hand-built latency reference: the same .tflite with each MAX_POOL_2D SAME-padded right on the
tensor the model pools, as TensorFlow's converter writes a padded max pool.

Two forms of a padded max pool are rewritten:
- pads -> VALID MAX_POOL_2D: the pads are removed and the pool set to SAME padding;
- PAD -> convolution -> SAME MAX_POOL_2D -> STRIDED_SLICE (tflq's form where SAME's top/left
  padding is ONNX's on a convolution output one cell longer, tflq/ops/pool.py
  max_pool_pads_as_same): the convolution goes back to the size the ONNX model has (its PAD
  shrinks by the cells that added), and the slice goes.

The reference computes something slightly different (SAME pads at the end, ONNX's pads at the
start), so it is only for timing: a file whose pooling is as fast as it can be in LiteRT.
"""
from __future__ import annotations

import math

import flatbuffers
import numpy as np

from tflq._generated.tflite.BuiltinOperator import BuiltinOperator
from tflq._generated.tflite.Model import ModelT
from tflq._generated.tflite.Padding import Padding

PADS = {BuiltinOperator.PAD, BuiltinOperator.PADV2, BuiltinOperator.MIRROR_PAD}
CONVOLUTIONS = {BuiltinOperator.CONV_2D, BuiltinOperator.DEPTHWISE_CONV_2D}


def _code(model: ModelT, op) -> int:
    code = model.operatorCodes[op.opcodeIndex]
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def same_padded_max_pools(data: bytes) -> tuple[bytes, int]:
    """The file with every padded MAX_POOL_2D rewritten as one SAME MAX_POOL_2D; and how many."""
    model = ModelT.InitFromPackedBuf(data, 0)
    replaced = 0
    for subgraph in model.subgraphs:
        producers = {int(op.outputs[0]): op for op in subgraph.operators if len(op.outputs)}
        uses: dict[int, list] = {}
        for op in subgraph.operators:
            for t in op.inputs:
                uses.setdefault(int(t), []).append(op)
        drop = []
        for op in subgraph.operators:
            if _code(model, op) != BuiltinOperator.MAX_POOL_2D:
                continue
            if op.builtinOptions.padding == Padding.SAME:
                cut = _undo_longer_convolution(model, subgraph, op, producers, uses)
                if cut is not None:
                    drop.append(cut)
                    replaced += 1
                continue
            source, pads = int(op.inputs[0]), []
            pad = producers.get(source)
            while pad is not None and _code(model, pad) in PADS and len(uses.get(int(pad.outputs[0]), [])) == 1:
                pads.append(pad)
                source = int(pad.inputs[0])
                pad = producers.get(source)
            options = op.builtinOptions
            height, width = subgraph.tensors[source].shape[1:3]
            same = [-(-height // options.strideH), -(-width // options.strideW)]
            if pads and list(subgraph.tensors[int(op.outputs[0])].shape[1:3]) == same:
                drop.extend(pads)
                op.inputs = [source] + [int(t) for t in op.inputs[1:]]
                options.padding = Padding.SAME
                replaced += 1
        subgraph.operators = [op for op in subgraph.operators if all(op is not d for d in drop)]
    builder = flatbuffers.Builder(len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), replaced


def _undo_longer_convolution(model: ModelT, subgraph, pool, producers, uses):
    """PAD -> conv -> SAME pool -> STRIDED_SLICE: the conv one cell shorter per sliced axis (as
    long as SAME still gives the slice's window count), the pool writing the slice's output.
    Returns the STRIDED_SLICE to drop, or None when the pool is not in that form."""
    tensors = subgraph.tensors
    pooled = int(pool.outputs[0])
    consumers = uses.get(pooled, [])
    conv = producers.get(int(pool.inputs[0]))
    if len(consumers) != 1 or _code(model, consumers[0]) != BuiltinOperator.STRIDED_SLICE or \
            conv is None or _code(model, conv) not in CONVOLUTIONS or \
            len(uses.get(int(conv.outputs[0]), [])) != 1:
        return None
    cut = consumers[0]
    pad = producers.get(int(conv.inputs[0]))
    if pad is None or _code(model, pad) != BuiltinOperator.PAD or \
            len(uses.get(int(pad.outputs[0]), [])) != 1:
        return None
    conv_out, pad_out = tensors[int(conv.outputs[0])], tensors[int(pad.outputs[0])]
    source = tensors[int(pad.inputs[0])]
    kept = list(tensors[int(cut.outputs[0])].shape)
    paddings_tensor = tensors[int(pad.inputs[1])]
    data = model.buffers[paddings_tensor.buffer].data
    paddings = np.frombuffer(bytes(bytearray(data)), np.int32).reshape(4, 2).copy()
    options, conv_options = pool.builtinOptions, conv.builtinOptions
    filter_shape = tensors[int(conv.inputs[1])].shape
    strides = (options.strideH, options.strideW)
    conv_strides = (conv_options.strideH, conv_options.strideW)
    dilations = (conv_options.dilationHFactor, conv_options.dilationWFactor)
    shape = list(conv_out.shape)
    for a in (0, 1):
        size = int(shape[a + 1])
        if math.ceil((size - 1) / strides[a]) == kept[a + 1] and \
                math.ceil(size / strides[a]) > kept[a + 1]:
            size -= 1
            effective = (int(filter_shape[a + 1]) - 1) * dilations[a] + 1
            paddings[a + 1, 1] = (size - 1) * conv_strides[a] + effective - \
                int(source.shape[a + 1]) - paddings[a + 1, 0]
            shape[a + 1] = size
    if [math.ceil(shape[a + 1] / strides[a]) for a in (0, 1)] != kept[1:3] or paddings.min() < 0:
        return None
    # a new buffer and tensor for the paddings: the old ones may be shared
    from tflq._generated.tflite.Buffer import BufferT
    from tflq._generated.tflite.Tensor import TensorT

    new_buffer = BufferT()
    new_buffer.data = np.frombuffer(paddings.astype(np.int32).tobytes(), np.uint8)
    model.buffers.append(new_buffer)
    new_paddings = TensorT()
    new_paddings.shape, new_paddings.type = np.array([4, 2], np.int32), paddings_tensor.type
    new_paddings.buffer, new_paddings.name = len(model.buffers) - 1, b"reference/paddings"
    tensors.append(new_paddings)
    pad.inputs = [int(pad.inputs[0]), len(tensors) - 1]
    conv_out.shape = np.array(shape, np.int32)
    pad_out.shape = np.array([int(d) + int(p.sum()) for d, p in zip(source.shape, paddings)], np.int32)
    for t in (conv_out, pad_out):
        t.shapeSignature = None
    pool.outputs = [int(cut.outputs[0])]
    return cut
