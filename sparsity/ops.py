"""Paddle ops that work the same in dygraph, PIR static graphs and the legacy static IR.

Paddle 3.x routes a few `paddle.*` functions (abs, ceil, max over all elements) through PIR-only kernels, so under
the legacy IR (`FLAGS_enable_pir_api=0`) they raise TypeError; here they are appended as plain ops.
"""
import paddle


def pir_enabled():
    """True when static programs are built as PIR (Paddle 3.x default), False for the legacy IR."""
    use_pir = getattr(paddle.framework, "use_pir_api", None)
    return bool(use_pir and use_pir())


def legacy_static():
    """True while building a legacy-IR static program (where some paddle.* functions break)."""
    return not paddle.in_dynamic_mode() and not pir_enabled()


def _append_legacy_op(op_type, x, attrs=None):
    from paddle.base.layer_helper import LayerHelper

    helper = LayerHelper(op_type)
    out = helper.create_variable_for_type_inference(x.dtype)
    helper.append_op(type=op_type, inputs={"X": [x]}, outputs={"Out": [out]}, attrs=attrs or {})
    return out


def abs(x):
    """|x|."""
    return _append_legacy_op("abs", x) if legacy_static() else paddle.abs(x)


def ceil(x):
    """Smallest integer >= x, elementwise (float result)."""
    return _append_legacy_op("ceil", x) if legacy_static() else paddle.ceil(x)


def largest(x):
    """The largest element, as a 1-element tensor (a reduction: far cheaper than topk on CPU)."""
    if legacy_static():
        return _append_legacy_op("reduce_max", x, {"dim": [0], "keep_dim": False, "reduce_all": True})
    return paddle.reshape(paddle.max(x), [1])


def total(x):
    """The sum of all elements, as a 1-element tensor."""
    if legacy_static():
        return _append_legacy_op("reduce_sum", x, {"dim": [0], "keep_dim": False, "reduce_all": True})
    return paddle.reshape(paddle.sum(x), [1])


def masked(weight, mask):
    """weight * mask with the pruned entries +0.0: a negative weight times 0 is -0.0, whose sign bit a
    bit-exact sparse file would have to keep as a value. A mask of another dtype than the weight (a bool
    mask written by user code, which Paddle 3.x refuses to multiply with float32; float32 masks of float16
    weights) is cast to the weight's dtype first. In a static program the dtype is the declared one: the
    static binding keeps the scope's masks float32 (see StaticBinding.ensure_initialized)."""
    if mask.dtype != weight.dtype:
        mask = paddle.cast(mask, weight.dtype)
    return weight * mask + 0.0
