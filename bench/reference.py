"""A hand-built latency reference: the same .tflite with each explicit pad in front of a MAX_POOL_2D
removed and the pool set to SAME padding, as TensorFlow's converter writes a padded max pool.

The reference computes something slightly different (SAME pads at the end, ONNX's pads at the
start), so it is only for timing: a file whose pooling is as fast as it can be in LiteRT.
"""
from __future__ import annotations

import flatbuffers

from tflq._generated.tflite.BuiltinOperator import BuiltinOperator
from tflq._generated.tflite.Model import ModelT
from tflq._generated.tflite.Padding import Padding

PADS = {BuiltinOperator.PAD, BuiltinOperator.PADV2, BuiltinOperator.MIRROR_PAD}


def _code(model: ModelT, op) -> int:
    code = model.operatorCodes[op.opcodeIndex]
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def same_padded_max_pools(data: bytes) -> tuple[bytes, int]:
    """The file with every pad -> MAX_POOL_2D pair replaced by one SAME MAX_POOL_2D; and how many."""
    model = ModelT.InitFromPackedBuf(data, 0)
    replaced = 0
    for subgraph in model.subgraphs:
        producers = {int(op.outputs[0]): op for op in subgraph.operators if len(op.outputs)}
        uses: dict[int, int] = {}
        for op in subgraph.operators:
            for t in op.inputs:
                uses[int(t)] = uses.get(int(t), 0) + 1
        drop = []
        for op in subgraph.operators:
            if _code(model, op) != BuiltinOperator.MAX_POOL_2D:
                continue
            source, pads = int(op.inputs[0]), []
            pad = producers.get(source)
            while pad is not None and _code(model, pad) in PADS and uses.get(int(pad.outputs[0])) == 1:
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
