"""Which ops of a .tflite file LiteRT hands to XNNPACK (its default delegate) and which it runs on
its builtin kernels, read from the interpreter after allocation.

The interpreter lists the file's ops followed by one DELEGATE op per XNNPACK partition (the
partition's inputs and outputs as its own). Walking back from the model outputs rebuilds the
execution plan: a tensor a DELEGATE op produces comes from that partition, any other from the
file's op that produces it, which then runs on a builtin kernel.
"""
from __future__ import annotations

from dataclasses import dataclass

from tests.conftest import importorskip


@dataclass(frozen=True)
class Delegation:
    partitions: int           # DELEGATE ops in the execution plan
    undelegated: list[str]    # kinds of the file's ops LiteRT runs itself, in file order


def xnnpack_delegation(tflite: bytes) -> Delegation:
    """Load with LiteRT's default resolver (XNNPACK applied at load, which must not fail)."""
    litert = importorskip("ai_edge_litert.interpreter")
    interpreter = litert.Interpreter(model_content=tflite, num_threads=1)
    interpreter.allocate_tensors()
    ops = interpreter._get_ops_details()
    producer = {}
    for op in ops:  # DELEGATE ops come last, so they win for the tensors they produce
        for t in op["outputs"]:
            producer[int(t)] = op
    outputs = [d["index"] for d in interpreter.get_output_details()]
    seen, run, stack = set(), set(), list(outputs)
    while stack:
        t = int(stack.pop())
        if t in seen or t not in producer:
            continue
        seen.add(t)
        op = producer[t]
        if op["index"] not in run:
            run.add(op["index"])
            stack.extend(int(i) for i in op["inputs"] if i >= 0)
    delegates = [op for op in ops if op["op_name"] == "DELEGATE" and op["index"] in run]
    undelegated = [op["op_name"] for op in ops if op["op_name"] != "DELEGATE" and op["index"] in run]
    return Delegation(len(delegates), undelegated)


# What tflq writes, for LiteRT (XNNPACK its default delegate), in place of an 8-bit op XNNPACK
# has no integer kernel for (pool.average_pools_as_depthwise): tests of the op's own kernel look
# for this kind instead
WRITTEN_IN_8_BIT = {"AVERAGE_POOL_2D": "DEPTHWISE_CONV_2D"}

# Kinds tflq imports but never writes, in any mode: a pass lowers them to the kind named here
# before the file is written (conv3d.conv_3d_as_conv_2d); that kind's own tests cover its kernel
LOWERED = {"CONV_3D": "CONV_2D"}
