"""ONNX Einsum lowered to BATCH_MATMUL or FULLY_CONNECTED (with SUM, TRANSPOSE and RESHAPE around them).

Every index letter of a two-operand equation is one of: batch (both operands and the output),
contracted (both operands, not the output), free (one operand and the output) or summed (one
operand only, reduced with SUM first). The product is then one matrix multiplication: each
operand arranged as [batch..., free..., contracted...] or [batch..., contracted..., free...]
(BATCH_MATMUL's adj_x/adj_y pick whichever the operand already is), free and contracted groups
flattened by RESHAPE, and the result reshaped and, if the output orders its letters otherwise,
transposed. Among the ways to arrange it (which operand goes left, which contracted order) the one
with the fewest TRANSPOSE ops is taken, so the attention equations ("bhid,bhjd->bhij",
"bhij,bhjd->bhid") need none. A constant operand without batch letters is a FULLY_CONNECTED
weight ("bid,jd->bij", "bij,jk->bik"). Equations with repeated letters in one operand (diagonals)
or more than two operands are refused with the equation named.
"""
from __future__ import annotations

import string
from dataclasses import dataclass
from itertools import product

import numpy as np
from onnx import helper

from tflq.errors import Unsupported
from tflq.ops.base import Case, rand

MAX_BATCH_MATMUL_RANK = 5  # batch_matmul.cc


@dataclass(frozen=True)
class Plan:
    """One way to compute a two-operand product: which operand is the left one, each operand's
    letter order for the product, the adjoint flags, and the letters of the raw result."""

    left: int
    orders: tuple[str, str]
    adj: tuple[bool, bool]  # (adj_x, adj_y)
    free: tuple[str, str]  # the left and right operands' free letters
    contract: str
    result: str
    transposes: int


def parse_equation(node, equation: str, ranks: list[int]) -> tuple[list[str], str]:
    """Explicit letters for each operand and the output ('...' expanded to capital letters)."""
    text = equation.replace(" ", "")
    lhs, arrow, out = text.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise Unsupported(node, "einsum_equation", f"Einsum '{equation}' names {len(terms)} operands "
                                                   f"but the node has {len(ranks)}")
    used = set(text)
    spare = [c for c in string.ascii_uppercase if c not in used]
    ellipsis_rank = max((rank - (len(t) - 3) for t, rank in zip(terms, ranks) if "..." in t), default=0)
    ellipsis = "".join(spare[:ellipsis_rank])
    expanded = []
    for term, rank in zip(terms, ranks):
        if "..." in term:
            count = rank - (len(term) - 3)
            term = term.replace("...", ellipsis[ellipsis_rank - count:] if count else "")
        if len(term) != rank or not all(c.isalpha() for c in term):
            raise Unsupported(node, "einsum_equation", f"Einsum '{equation}': term '{term}' does not fit "
                                                       f"an operand of rank {rank}")
        expanded.append(term)
    if arrow:
        out = out.replace("...", ellipsis)
    else:  # implicit output: the letters seen once, in alphabetical order, after the ellipsis
        counts = {c: sum(t.count(c) for t in expanded) for c in "".join(expanded)}
        out = ellipsis + "".join(sorted(c for c, n in counts.items() if n == 1 and c not in ellipsis))
    for term in expanded + [out]:
        if len(set(term)) != len(term):
            raise Unsupported(node, "einsum_equation", f"Einsum '{equation}': a letter repeats within "
                                                       f"'{term}' (diagonals and traces are not supported)")
    if set(out) - set("".join(expanded)):
        raise Unsupported(node, "einsum_equation", f"Einsum '{equation}': an output letter is in no operand")
    return expanded, out


def _letter_sizes(node, equation: str, terms: list[str], shapes: list[tuple[int, ...]]) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for term, shape in zip(terms, shapes):
        for c, d in zip(term, shape):
            if sizes.get(c, d) != d and 1 not in (sizes[c], d):
                raise Unsupported(node, "einsum_equation", f"Einsum '{equation}': '{c}' is {sizes[c]} "
                                                           f"and {d} in different operands")
            sizes[c] = max(sizes.get(c, d), d)
    return sizes


class _Lowering:
    def __init__(self, node, ctx) -> None:
        self.node, self.ctx = node, ctx
        self.count = 0

    def name(self, what: str) -> str:
        self.count += 1
        return f"{self.node.output[0]}/einsum_{what}_{self.count}"

    def arrange(self, x: str, letters: str, target: str) -> str:
        """`x` (axes `letters`) with its axes in the order `target`: TRANSPOSE, or RESHAPE when only
        size-1 axes move."""
        if letters == target:
            return x
        shape = self.ctx.shape(x)
        perm = [letters.index(c) for c in target]
        out_shape = tuple(shape[p] for p in perm)
        out = self.ctx.new_activation(self.name("transposed"), out_shape)
        kept = [p for p in perm if shape[p] != 1]
        if kept == sorted(kept):
            self.reshape(x, out_shape, out)
        else:
            perm_name = self.ctx.add_constant(f"{out}/perm", np.array(perm, np.int32))
            self.ctx.add_op("TRANSPOSE", [x, perm_name], [out])
        return out

    def reshape(self, x: str, shape: tuple[int, ...], out: str = "") -> str:
        from tflq.ops.reshape import add_reshape

        if not out and self.ctx.shape(x) == tuple(shape):
            return x
        out = out or self.ctx.new_activation(self.name("reshaped"), tuple(shape))
        add_reshape(self.ctx, x, out, tuple(shape))
        return out

    def sum_out(self, x: str, letters: str, keep: set[str]) -> tuple[str, str]:
        """Sum over the letters not in `keep`."""
        from tflq.ops.reduce import add_reduce

        axes = [i for i, c in enumerate(letters) if c not in keep]
        if not axes:
            return x, letters
        shape = self.ctx.shape(x)
        kept = "".join(c for c in letters if c in keep)
        out = self.ctx.new_activation(self.name("sum"), tuple(d for i, d in enumerate(shape) if i not in axes))
        add_reduce(self.ctx, "SUM", x, axes, out, keep_dims=False)
        return out, kept


def _plans(terms: list[str], out: str, batch: str) -> list[Plan]:
    """Every arrangement of the two operands, cheapest first."""
    shared = set(terms[0]) & set(terms[1])
    contract_orders = {"".join(c for c in t if c in shared and c not in out) for t in terms}
    plans = []
    for left, contract in product((0, 1), sorted(contract_orders)):
        right = 1 - left
        free = ["".join(c for c in out if c in terms[i] and c not in batch) for i in (left, right)]
        options = []
        for position, i in enumerate((left, right)):
            natural = batch + free[position] + contract if position == 0 else batch + contract + free[1]
            adjoint = batch + contract + free[0] if position == 0 else batch + free[1] + contract
            options.append([(natural, False), (adjoint, True)])
        result = batch + free[0] + free[1]
        for (order_l, adj_l), (order_r, adj_r) in product(*options):
            cost = (order_l != terms[left]) + (order_r != terms[right]) + (result != out)
            orders = [None, None]
            orders[left], orders[right] = order_l, order_r
            plans.append(Plan(left, (orders[0], orders[1]), (adj_l, adj_r), (free[0], free[1]), contract,
                              result, cost))
    return sorted(plans, key=lambda p: (p.transposes, p.left, p.adj))


def import_einsum(node, ctx) -> None:
    from tflq import ops as registry
    from tflq.ops.fully_connected import add_fully_connected

    equation = str(ctx.attr(node, "equation"))
    operands = [n for n in node.input]
    shapes = [ctx.shape(n) for n in operands]
    if len(operands) not in (1, 2):
        raise Unsupported(node, "einsum_operands", f"Einsum '{equation}' with {len(operands)} operands "
                                                   f"(one or two are supported)")
    terms, out = parse_equation(node, equation, [len(s) for s in shapes])
    sizes = _letter_sizes(node, equation, terms, shapes)
    low = _Lowering(node, ctx)
    target = node.output[0]
    others = [set(terms[1 - i]) if len(terms) == 2 else set() for i in range(len(terms))]
    values, letters = [], []
    for x, term, other in zip(operands, terms, others):
        value, kept = low.sum_out(x, term, set(out) | other)
        values.append(value)
        letters.append(kept)
    if len(values) == 1:
        low.reshape(low.arrange(values[0], letters[0], out), tuple(sizes[c] for c in out), target)
        return
    batch = "".join(c for c in out if c in letters[0] and c in letters[1])
    constant = [ctx.constant(v) is not None or ctx.graph.is_constant(ctx.tensor(v)) for v in values]
    if not batch and constant[1] != constant[0]:
        return _fully_connected(node, ctx, low, values, letters, out, sizes, constant.index(True),
                                add_fully_connected)
    plan = _plans(letters, out, batch)[0]
    batch_rank = len(batch)
    if batch_rank + 2 > MAX_BATCH_MATMUL_RANK:
        raise Unsupported(node, "einsum_rank", f"Einsum '{equation}' has {batch_rank} batch axes "
                                               f"(BATCH_MATMUL allows {MAX_BATCH_MATMUL_RANK - 2})")
    matrices = []
    for position, i in enumerate((plan.left, 1 - plan.left)):
        arranged = low.arrange(values[i], letters[i], plan.orders[i])
        # [batch..., first, second]: free then contracted for a plain left operand, and so on
        first = len(plan.free[position]) if (position == 0) != plan.adj[position] else len(plan.contract)
        shape = ctx.shape(arranged)
        rows = int(np.prod(shape[batch_rank:batch_rank + first], dtype=np.int64))
        cols = int(np.prod(shape[batch_rank + first:], dtype=np.int64))
        matrices.append(low.reshape(arranged, shape[:batch_rank] + (rows, cols)))
    batch_shape = tuple(sizes[c] for c in batch)
    free_l, free_r = plan.free
    rows = int(np.prod([sizes[c] for c in free_l], dtype=np.int64))
    cols = int(np.prod([sizes[c] for c in free_r], dtype=np.int64))
    spec = registry.spec("BATCH_MATMUL")
    result_shape = tuple(sizes[c] for c in plan.result)
    direct = plan.result == out and result_shape == batch_shape + (rows, cols)
    product_name = target if direct else ctx.new_activation(low.name("product"), batch_shape + (rows, cols))
    ctx.add_op("BATCH_MATMUL", matrices, [product_name], spec.Attrs(adj_x=plan.adj[0], adj_y=plan.adj[1]))
    if direct:
        return
    if plan.result == out:
        low.reshape(product_name, result_shape, target)
        return
    full = low.reshape(product_name, result_shape)
    arranged = low.arrange(full, plan.result, out)
    low.reshape(arranged, tuple(sizes[c] for c in out), target)


def _fully_connected(node, ctx, low: _Lowering, values, letters, out: str, sizes, weight_index: int,
                     add_fully_connected) -> None:
    """x @ W with W a constant operand holding only contracted and free letters."""
    x, x_letters = values[1 - weight_index], letters[1 - weight_index]
    w_letters = letters[weight_index]
    weight = ctx.constant(values[weight_index])
    if weight is None:
        weight = ctx.graph.tensors[ctx.tensor(values[weight_index])].data
    contract = "".join(c for c in x_letters if c in w_letters)
    free_x = "".join(c for c in out if c in x_letters)
    free_w = "".join(c for c in out if c in w_letters)
    arranged = low.arrange(x, x_letters, free_x + contract)
    k = int(np.prod([sizes[c] for c in contract], dtype=np.int64))
    n = int(np.prod([sizes[c] for c in free_w], dtype=np.int64))
    lead = tuple(sizes[c] for c in free_x)
    matrix = low.reshape(arranged, (lead or (1,)) + (k,))
    perm = [w_letters.index(c) for c in free_w + contract]
    w = np.ascontiguousarray(np.transpose(weight, perm)).reshape(n, k).astype(np.float32)
    result = free_x + free_w
    target = node.output[0]
    final_shape = tuple(sizes[c] for c in out)
    product_shape = (lead or (1,)) + (n,)
    direct = result == out and product_shape == final_shape
    product_name = target if direct else ctx.new_activation(low.name("product"), product_shape)
    add_fully_connected(ctx, node, matrix, w, None, product_name)
    if direct:
        return
    full = low.reshape(product_name, tuple(sizes[c] for c in result))
    low.reshape(low.arrange(full, result, out), final_shape, target)


def _case(name: str, equation: str, *shapes, constant: int | None = None) -> Case:
    names = ["a", "b"][:len(shapes)]
    inputs = {n: rand(*s, seed=k) for k, (n, s) in enumerate(zip(names, shapes))}
    consts = {}
    if constant is not None:
        consts[names[constant]] = inputs.pop(names[constant])
    return Case(name, [helper.make_node("Einsum", names, ["y"], equation=equation)], inputs, consts,
                opset=12)


BATCH_MATMUL_CASES = [
    _case("einsum_attention_scores", "bhid,bhjd->bhij", (1, 2, 5, 4), (1, 2, 6, 4)),
    _case("einsum_attention_values", "bhij,bhjd->bhid", (1, 2, 5, 6), (1, 2, 6, 4)),
    _case("einsum_ellipsis_matmul", "...ij,...jk->...ik", (2, 3, 4, 5), (2, 3, 5, 2)),
    _case("einsum_transposed_output", "bhid,bhjd->bhji", (2, 2, 3, 4), (2, 2, 5, 4)),
    _case("einsum_heads_second", "bqhd,bkhd->bhqk", (1, 5, 2, 4), (1, 6, 2, 4)),
    _case("einsum_contract_first", "bdi,bdj->bij", (2, 4, 3), (2, 4, 5)),
    _case("einsum_implicit_output", "bij,bjk", (2, 3, 4), (2, 4, 5)),
    _case("einsum_two_activations_no_batch", "ij,jk->ik", (3, 4), (4, 5)),
    _case("einsum_summed_letter", "bij,bjk->bk", (2, 3, 4), (2, 4, 5)),
]
FULLY_CONNECTED_CASES = [
    _case("einsum_projection", "bid,jd->bij", (2, 5, 8), (6, 8), constant=1),
    _case("einsum_projection_kn", "bij,jk->bik", (2, 5, 8), (8, 3), constant=1),
    _case("einsum_ellipsis_projection", "...ij,jk->...ik", (2, 3, 4, 8), (8, 3), constant=1),
    _case("einsum_weight_first", "jd,bid->bij", (6, 8), (2, 5, 8), constant=0),
    _case("einsum_heads_projection", "bid,hde->bhie", (1, 5, 8), (2, 8, 4), constant=1),
]
