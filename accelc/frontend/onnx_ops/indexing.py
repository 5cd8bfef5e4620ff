"""Indexing: Gather, GatherElements, TopK (k as an attribute before opset 10, an input after), OneHot,
Trilu."""
from __future__ import annotations

import onnx

from ...ir.ops.indexing import GatherAttrs, GatherElementsAttrs, OneHotAttrs, TopKAttrs, TriluAttrs
from .registry import ConvertContext, onnx_op


@onnx_op("Gather", since=1)
def gather(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    return ctx.emit("Gather", [node.input[0], node.input[1]], GatherAttrs(int(ctx.attr(node, "axis", 0))))


@onnx_op("GatherElements", since=11)
def gather_elements(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    return ctx.emit("GatherElements", [node.input[0], node.input[1]],
                    GatherElementsAttrs(int(ctx.attr(node, "axis", 0))))


def _topk(ctx: ConvertContext, node: onnx.NodeProto, k: int) -> list[str]:
    attrs = TopKAttrs(k=k, axis=int(ctx.attr(node, "axis", -1)), largest=bool(ctx.attr(node, "largest", 1)),
                      sorted=bool(ctx.attr(node, "sorted", 1)))
    return ctx.emit("TopK", [node.input[0]], attrs)


@onnx_op("TopK", since=1)
def topk_attr(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    return _topk(ctx, node, int(ctx.attr(node, "k")))


@onnx_op("TopK", since=10)
def topk(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    k = ctx.const_ints(node.input[1], "input 'K'")
    if len(k) != 1:
        raise ctx.fail(f"input 'K' must hold one value, has {len(k)}")
    return _topk(ctx, node, k[0])


@onnx_op("OneHot", since=9)
def one_hot(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    return ctx.emit("OneHot", [node.input[0], node.input[1], node.input[2]],
                    OneHotAttrs(int(ctx.attr(node, "axis", -1))))


@onnx_op("Trilu", since=14)
def trilu(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    inputs = [node.input[0]] + ([node.input[1]] if ctx.input(node, 1) else [])
    return ctx.emit("Trilu", inputs, TriluAttrs(bool(ctx.attr(node, "upper", 1))))
