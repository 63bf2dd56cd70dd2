"""one_transpose_per_chain: a run of reshapes and transposes becomes reshape, one transpose, reshape."""
from __future__ import annotations

import numpy as np

from tflq.passes.cleanup import _one_transpose


def _random_chain(rng, shape):
    steps, current = [], list(shape)
    for _ in range(int(rng.integers(2, 6))):
        if rng.random() < 0.5:
            perm = [int(p) for p in rng.permutation(len(current))]
            steps.append(("TRANSPOSE", tuple(perm)))
            current = [current[p] for p in perm]
        else:
            k = int(rng.integers(len(current)))
            if current[k] % 2 == 0 and rng.random() < 0.6:  # split
                current = current[:k] + [2, current[k] // 2] + current[k + 1:]
            elif len(current) > 1 and k < len(current) - 1:  # merge
                current = current[:k] + [current[k] * current[k + 1]] + current[k + 2:]
            steps.append(("RESHAPE", tuple(current)))
    return steps


def test_plan_reproduces_the_chain():
    """On 300 random runs: every plan found gives the run's result; most runs have one (a split
    across two pieces of a merged, permuted axis has none, and keeps its transposes)."""
    planned = 0
    for seed in range(300):
        rng = np.random.default_rng(seed)
        shape = tuple(int(rng.choice([1, 2, 3, 4, 6])) for _ in range(int(rng.integers(2, 5))))
        steps = _random_chain(rng, shape)
        x = np.arange(int(np.prod(shape))).reshape(shape)
        expected = x
        for kind, arg in steps:
            expected = expected.transpose(arg) if kind == "TRANSPOSE" else expected.reshape(arg)
        plan = _one_transpose(shape, steps)
        if plan is None:
            continue
        planned += 1
        fine_shape, perm = plan
        actual = x.reshape(fine_shape).transpose(perm).reshape(expected.shape)
        np.testing.assert_array_equal(actual, expected, err_msg=f"seed {seed}: {shape} {steps}")
    assert planned >= 250


def test_conv_stem_flatten_is_a_reshape():
    """NHWC -> NCHW -> [N, C, H*W] -> [N, H*W, C]: no element moves."""
    fine_shape, perm = _one_transpose((1, 4, 4, 8), [("TRANSPOSE", (0, 3, 1, 2)), ("RESHAPE", (1, 8, 16)),
                                                    ("TRANSPOSE", (0, 2, 1))])
    assert perm == sorted(perm)


def test_uneven_boundary_has_no_plan():
    assert _one_transpose((2, 3), [("TRANSPOSE", (1, 0)), ("RESHAPE", (2, 3))]) is None
