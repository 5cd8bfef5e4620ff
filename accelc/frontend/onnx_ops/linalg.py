"""Linear algebra: MatMul and Gemm.

Gemm before opset 7 broadcast C with a ``broadcast`` attribute (a different rule), so it is supported from
opset 7, where C broadcasts unidirectionally like NumPy; C became optional in opset 11.
"""
from __future__ import annotations

import onnx

from ...ir.ops.linalg import GemmAttrs
from .registry import ConvertContext, onnx_op


@onnx_op("MatMul", since=1)
def matmul(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    return ctx.emit("MatMul", [node.input[0], node.input[1]])


@onnx_op("Gemm", since=7)
def gemm(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    attrs = GemmAttrs(alpha=float(ctx.attr(node, "alpha", 1.0)), beta=float(ctx.attr(node, "beta", 1.0)),
                      trans_a=bool(ctx.attr(node, "transA", 0)), trans_b=bool(ctx.attr(node, "transB", 0)))
    inputs = [node.input[0], node.input[1]]
    if ctx.input(node, 2):
        inputs.append(node.input[2])
    return ctx.emit("Gemm", inputs, attrs)
