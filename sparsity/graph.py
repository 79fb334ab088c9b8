"""A static program's forward ops in one IR-neutral shape, for the analyses that read a model's structure
(channel groups, FLOPs): PIR and the legacy IR name ops, slots and attributes differently; here they are one.

`read(program)` walks the global block up to the first backward op, so a training program (loss, backward,
optimizer, masking) reads as its forward part. Each op becomes an `Op` whose `inputs`/`outputs` are
`Value`s keyed by canonical slot names (`x`, `y`, `filter`, `scale`, `bias`, `mean`, `variance`, `out`) and
whose `type` drops the dialect prefix, the in-place suffix and the legacy spellings (`elementwise_add` is
`add`, `matmul_v2` is `matmul`, `hard_swish` is `hardswish`, ...). A `Value` knows its shape and, when it
is a parameter (or a parameter reshaped, as conv biases are), the parameter's name.
"""
from dataclasses import dataclass, field

from .ops import pir_enabled

LEGACY_TYPES = {
    "elementwise_add": "add",
    "elementwise_sub": "subtract",
    "elementwise_mul": "multiply",
    "elementwise_div": "divide",
    "matmul_v2": "matmul",
    "hard_swish": "hardswish",
    "hard_sigmoid": "hardsigmoid",
    "flatten_contiguous_range": "flatten",
    "reshape2": "reshape",
    "squeeze2": "squeeze",
    "unsqueeze2": "unsqueeze",
    "transpose2": "transpose",
    "softmax_with_cross_entropy": "cross_entropy_with_softmax",
    "reduce_mean": "mean",
    "reduce_sum": "sum",
    "fill_constant": "full",
    "feed": "data",
}
# canonical slot names: PIR's (lower case) with conv2d's `input` called `x`; legacy slots map onto them
LEGACY_SLOTS = {"Input": "x", "X": "x", "Y": "y", "Filter": "filter", "Scale": "scale", "Bias": "bias", "Mean": "mean",
                "Variance": "variance", "Output": "out", "Out": "out", "Logits": "x", "Label": "label"}
LEGACY_OUTPUTS = {"batch_norm": "Y", "conv2d": "Output", "depthwise_conv2d": "Output"}
ATTRIBUTES = {  # canonical name -> (PIR name, legacy name)
    "groups": ("groups", "groups"),
    "pooling_type": ("pooling_type", "pooling_type"),
    "adaptive": ("adaptive", "adaptive"),
    "global_pooling": ("global_pooling", "global_pooling"),
    "start_axis": ("start_axis", "start_axis"),
    "stop_axis": ("stop_axis", "stop_axis"),
    "transpose_x": ("transpose_x", "trans_x"),
    "transpose_y": ("transpose_y", "trans_y"),
    "axis": ("axis", "axis"),
}


@dataclass(frozen=True)
class Value:
    """A tensor of the program: a stable key, its static shape (-1: unknown batch), and the parameter it is."""

    key: str
    shape: tuple
    param: str = None


@dataclass
class Op:
    """One forward op: normalized type, {slot: [Value]} of inputs and outputs, the attributes analyses need."""

    type: str
    inputs: dict
    outputs: dict
    attrs: dict = field(default_factory=dict)
    where: str = ""  # for messages: the layer that built it (PIR struct_name) or its output variable (legacy)

    def input(self, slot):
        values = self.inputs.get(slot) or []
        return values[0] if values else None

    @property
    def out(self):
        return self.outputs["out"][0]

    def describe(self):
        return f"{self.type} op{' in ' + self.where if self.where else ''} (output shape {list(self.out.shape) if self.outputs.get('out') else '?'})"


def is_backward(op_type):
    return op_type.endswith("_grad") or op_type.endswith("_grad_")


def read(program):
    """The forward ops of a static program (PIR or legacy IR), in program order, as `Op`s."""
    return _read_pir(program) if pir_enabled() else _read_legacy(program)


def _normal_type(name):
    name = name.split(".")[-1]
    name = name[:-1] if name.endswith("_") and not name.endswith("__") else name
    return LEGACY_TYPES.get(name, name)


def _read_pir(program):
    ops, params, combined = [], {}, {}
    for op in program.global_block().ops:
        name = op.name()
        if is_backward(name):
            break
        if name == "builtin.parameter":
            params[op.result(0).id] = op.attrs()["parameter_name"]
            continue
        if name == "builtin.combine":  # a list of values (concat's inputs): the op that reads it gets the list
            combined[op.result(0).id] = [v for source in op.operands_source() for v in combined.get(source.id, [source])]
            continue
        kind = _normal_type(name)
        inputs = {}
        for slot, value in zip(op.get_input_names() if not name.startswith("builtin.") else ["x"] * op.num_operands(), op.operands_source()):
            if _has_id(value):  # optional inputs left empty (dropout's seed tensor) have none
                inputs.setdefault(_pir_slot(slot), []).extend(_pir_value(v, params) for v in combined.get(value.id, [value]))
        outputs = {}
        names = op.get_output_names() if not name.startswith("builtin.") else ["out"] * op.num_results()
        for index in range(op.num_results()):
            slot = "out" if index == 0 else f"{names[index]}{index}"
            outputs[slot] = [_pir_value(op.result(index), params)]
        if kind == "reshape" and inputs["x"][0].param:  # a parameter reshaped (a conv bias): still that parameter
            params[op.result(0).id] = inputs["x"][0].param
            outputs["out"] = [_pir_value(op.result(0), params)]
        attrs = op.attrs()
        ops.append(Op(kind, inputs, outputs, _attributes(attrs, 0), attrs.get("struct_name", "").strip("/")))
    return ops


def _pir_slot(slot):
    return "x" if slot == "input" else slot


def _has_id(value):
    try:
        return bool(value.id)
    except ValueError:
        return False


def _pir_value(value, params):
    try:
        shape = tuple(value.shape)
    except (ValueError, RuntimeError, AttributeError):  # a value of no tensor type (a combine of several)
        shape = ()
    return Value(value.id, shape, params.get(value.id))


def _read_legacy(program):
    block = program.global_block()
    params = {p.name for p in block.all_parameters()}
    reshaped = {}
    ops = []

    def value(name):
        var = block._find_var_recursive(name)
        try:
            shape = tuple(var.shape)
        except (AttributeError, ValueError, RuntimeError):  # not a dense tensor (a step scope, a reader)
            shape = ()
        return Value(name, shape, name if name in params else reshaped.get(name))

    for op in block.ops:
        if is_backward(op.type):
            break
        kind = _normal_type(op.type)
        inputs = {LEGACY_SLOTS.get(slot, slot.lower()): [value(n) for n in op.input(slot)] for slot in op.input_names if op.input(slot)}
        main_output = LEGACY_OUTPUTS.get(op.type, "Out")
        outputs = {("out" if slot == main_output else slot): [value(n) for n in op.output(slot)] for slot in op.output_names if op.output(slot)}
        if kind == "reshape" and inputs["x"][0].param:
            reshaped[op.output("Out")[0]] = inputs["x"][0].param
            outputs["out"] = [value(op.output("Out")[0])]
        where = op.output(main_output)[0] if main_output in op.output_names and op.output(main_output) else ""
        ops.append(Op(kind, inputs, outputs, _attributes(op, 1), where))
    return ops


def _attributes(source, which):
    """The canonical attributes an op has, from PIR's attrs dict (which=0) or a legacy op (which=1)."""
    found = {}
    for canonical, names in ATTRIBUTES.items():
        name = names[which]
        if which == 0 and name in source:
            found[canonical] = source[name]
        elif which == 1 and source.has_attr(name):
            found[canonical] = source.attr(name)
    return found


def trace(layer, input_shape):
    """The static program of a dygraph Layer's forward pass, traced once by paddle.jit.to_static with an input of
    `input_shape` ([C, H, W] or [N, C, H, W]); the layer is not changed, and its hooks run as in a forward pass."""
    import paddle

    class Call(paddle.nn.Layer):  # a throwaway owner for to_static to convert (Paddle 2.6 cannot trace a closure)
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, images):
            return self.layer(images)

    spec = [paddle.static.InputSpec([None] + list(input_shape[-3:]), "float32", "image")]
    was_training = layer.training
    layer.eval()
    try:
        owner = Call()  # held while tracing: to_static keeps only a weak reference to it
        return paddle.jit.to_static(owner, input_spec=spec, full_graph=True).forward.concrete_program.main_program
    finally:
        if was_training:
            layer.train()
