"""Convolution and matrix-product FLOPs of a JAX function, counted on its jaxpr, and where
a bfloat16 program's matrix work is not bfloat16 (shared by the benchmark scripts through
``common``)."""
from __future__ import annotations

import collections
import math

import jax


def matmul_flops(fn, *args) -> float:
    """FLOPs of the convolutions and matrix products of ``fn(*args)`` (2 per multiply-add),
    counted on its jaxpr, so the count is the same on every device.

    XLA's own cost analysis is no use for utilisation here: it counts a loop body once
    whatever its trip count, and on GPUs the convolutions become cuDNN calls it counts as
    zero. Loop bodies (``scan``) count ``length`` times; the branches of a ``cond`` count
    as the most expensive one; elementwise work is not counted (the usual convention for
    model FLOP utilisation)."""
    return sum(flops for flops, _, _ in matmul_ops(fn, *args))


def matmul_ops(fn, *args) -> list[tuple[float, object, str]]:
    """``(FLOPs, equation, scope)`` for each convolution and matrix product of
    ``fn(*args)`` (see ``matmul_flops``; an equation inside a loop appears once with its
    FLOPs times the trip count). The equation gives operand dtypes and ``precision``;
    ``scope`` is its source scope through the enclosing loops and calls (the module
    path, ``transpose(jvp(...))`` for the backward pass), e.g. for ``precision_audit``."""
    closed = jax.make_jaxpr(fn)(*args)
    return list(_jaxpr_ops(closed.jaxpr, 1.0, ""))


def _eqn_flops(eqn) -> float:
    if eqn.primitive.name == "conv_general_dilated":
        rhs = eqn.invars[1].aval.shape
        out = eqn.outvars[0].aval.shape
        out_feature_dim = eqn.params["dimension_numbers"].rhs_spec[0]
        return 2.0 * math.prod(out) * math.prod(rhs) / rhs[out_feature_dim]
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval.shape
    return 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in lhs_contract)


def _jaxpr_ops(jaxpr, repeat: float, outer: str):
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        scope = "/".join(s for s in (outer, str(eqn.source_info.name_stack)) if s)
        if name in ("conv_general_dilated", "dot_general"):
            yield repeat * _eqn_flops(eqn), eqn, scope
        elif name == "cond":
            branches = [list(_jaxpr_ops(b.jaxpr, repeat, scope))
                        for b in eqn.params["branches"]]
            yield from max(branches, key=lambda ops: sum(f for f, _, _ in ops))
        else:
            times = repeat * (eqn.params.get("length", 1) if name == "scan" else 1)
            for value in eqn.params.values():
                for sub in (value if isinstance(value, (tuple, list)) else (value,)):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        yield from _jaxpr_ops(inner, times, scope)


def precision_audit(fn, *args, top: int = 10) -> tuple[float, list[list]]:
    """Where ``fn``'s matrix work leaves bfloat16: ``(share, rows)``, ``share`` the
    fraction of its convolution and matrix-product FLOPs with an operand that is not
    bfloat16 (on GPUs those run on CUDA cores or as TF32, not on the bfloat16 tensor
    cores), ``rows`` the ``top`` such groups as ``[% of FLOPs, GFLOP, op, operand dtypes,
    precision, source scope]``, largest first. Meant for a bfloat16 program, where each
    row should be a float32 computation kept on purpose."""
    groups = collections.Counter()
    total = 0.0
    for flops, eqn, scope in matmul_ops(fn, *args):
        total += flops
        dtypes = tuple(str(v.aval.dtype) for v in eqn.invars[:2])
        if dtypes != ("bfloat16", "bfloat16"):
            precision = eqn.params.get("precision")
            precision = "default" if precision is None else \
                ",".join(str(p).removeprefix("Precision.") for p in precision)
            op = "conv" if eqn.primitive.name == "conv_general_dilated" else "dot"
            groups[(op, " x ".join(dtypes), precision, scope or "(top level)")] += flops
    rows = [[100 * f / total, f / 1e9, *key]
            for key, f in sorted(groups.items(), key=lambda kv: -kv[1])[:top]]
    return (sum(groups.values()) / total if total else 0.0), rows
