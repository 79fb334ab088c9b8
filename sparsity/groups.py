"""Channel groups, derived from a model's own graph: the parameter slices that go together when one channel goes.

Removing filter k of a convolution also removes its bias entry, entry k of the BatchNorm that follows
(scale, shift, mean, variance), channel k of a depthwise convolution that reads it (and onward), and input
slice k of every convolution or linear layer that consumes it. Residual additions tie the channels they add
into one group; a squeeze-excitation multiply ties its scale to the channels it scales; a flatten before a
linear layer maps one channel to several inputs. `find_groups(ops)` follows the program's ops (sparsity.graph)
and unites channel spaces as these ops demand, DepGraph-style but over Paddle's own op list, so no table per
architecture is needed. A channel that feeds the network's output, or comes from its input, is never pruned;
an op the analysis does not understand stops it with a GroupError naming the op, never a silently wrong group.

One group = one keep-vector over its channels; `member_masks` turns keep-vectors into a mask for every member
parameter (a convolution weight is a producer in one group and a consumer in another: its mask is the outer
product), and `slice_arrays` cuts the removed channels out of every member.
"""
from dataclasses import dataclass, field

import numpy as np

from . import graph

PRODUCER, CONSUMER, DEPTHWISE = "producer", "consumer", "depthwise"  # weights: what channel scores read
BIAS, NORM_SCALE, NORM_SHIFT, STATISTIC = "bias", "norm_scale", "norm_shift", "statistic"
UNARY = {
    "relu", "relu6", "hardswish", "hardsigmoid", "sigmoid", "swish", "silu", "gelu", "tanh", "leaky_relu", "elu",
    "dropout", "scale", "clip", "cast", "assign", "pool2d", "softplus", "mish", "identity",
}
ELEMENTWISE = {"add", "subtract", "multiply", "divide", "maximum", "minimum"}
SINKS = {  # ops that consume the network's output (a loss, a metric): channels feeding them are never pruned
    "cross_entropy_with_softmax", "cross_entropy", "cross_entropy2", "softmax", "log_softmax", "mean", "sum",
    "accuracy", "top_k", "top_k_v2", "topk", "argmax", "arg_max", "fetch", "mse_loss", "square_error_cost",
}
OUTPUT = "it feeds the network's output"


class GroupError(ValueError):
    """The channel analysis met a pattern it does not understand (the message names the op)."""


@dataclass(frozen=True)
class Member:
    """One parameter's part in a group: which axis indexes the group's channels and what the parameter does.

    role: producer (a filter or linear output makes the channel), consumer (a convolution's or linear layer's
    input slice reads it), depthwise (a depthwise filter, channel in = channel out), bias, norm_scale and
    norm_shift (BatchNorm's scale and shift), all masked with the channel; or statistic (BatchNorm's running
    mean/variance: sliced away with the channel, never masked: a zero scale and shift already give zero).
    repeat: a linear layer reading a flattened map takes channel c at inputs c*repeat .. c*repeat+repeat-1.
    """

    param: str
    axis: int
    role: str
    repeat: int = 1


@dataclass
class ChannelGroup:
    """Channels that are kept or removed together: how many, every member slice, and why it is fixed (or None)."""

    index: int
    channels: int
    members: list = field(default_factory=list)
    fixed: str = None

    @property
    def prunable(self):
        return self.fixed is None and bool(self.producers)

    @property
    def producers(self):
        return [m for m in self.members if m.role == PRODUCER]

    @property
    def name(self):
        """The group's name: its first producer's parameter (or any member's, for a group without producers)."""
        return (self.producers or self.members)[0].param

    def masked_members(self):
        return [m for m in self.members if m.role != STATISTIC]


class _Spaces:
    """Union-find over channel spaces; each root carries the channel count, the members and a fixed reason."""

    def __init__(self):
        self.parent, self.channels, self.fixed, self.members = [], [], {}, {}

    def new(self, channels, fixed=None):
        node = len(self.parent)
        self.parent.append(node)
        self.channels.append(int(channels))
        self.members[node] = []
        if fixed:
            self.fixed[node] = fixed
        return node

    def find(self, node):
        while self.parent[node] != node:
            self.parent[node] = self.parent[self.parent[node]]
            node = self.parent[node]
        return node

    def union(self, a, b, op):
        a, b = sorted((self.find(a), self.find(b)))  # the earlier space stays the root: members keep program order
        if a == b:
            return a
        if self.channels[a] != self.channels[b]:
            raise GroupError(f"{op.describe()} ties {self.channels[a]} channels to {self.channels[b]}; the channel analysis cannot follow it")
        self.parent[b] = a
        self.members[a] += self.members.pop(b)
        if b in self.fixed:
            self.fixed.setdefault(a, self.fixed.pop(b))
        return a

    def fix(self, node, reason):
        self.fixed.setdefault(self.find(node), reason)

    def add(self, node, member):
        self.members[self.find(node)].append(member)


@dataclass
class Channels:
    """What the analysis found: the groups, and for every activation the group its channels belong to.

    spaces: {value key: (group index, repeat)}; a flattened map's channel c spans `repeat` features.
    """

    groups: list
    spaces: dict

    @property
    def prunable(self):
        return [g for g in self.groups if g.prunable]


def find_groups(ops):
    """The Channels of a model's forward ops (sparsity.graph.read); raises GroupError for an unknown pattern."""
    spaces = _Spaces()
    spaces_of = {}  # activation value key -> (node, repeat)
    constants, consumed, produced = set(), set(), set()
    for op in ops:
        for values in op.outputs.values():
            produced.update(v.key for v in values)
    for op in ops:
        activations = _activation_inputs(op, spaces, spaces_of, constants, produced)
        outputs = [v for values in op.outputs.values() for v in values]
        if op.type == "data":
            out = op.out
            if len(out.shape) >= 2:
                spaces_of[out.key] = (spaces.new(out.shape[1], "it is the model's input"), 1)
            else:
                constants.add(out.key)
            continue
        if not activations:  # constants, parameter arithmetic (a regularizer, a reshaped bias)
            constants.update(v.key for v in outputs)
            continue
        consumed.update(v.key for v in activations)
        if op.type in SINKS:
            for v in activations:
                spaces.fix(spaces_of[v.key][0], OUTPUT)
            constants.update(v.key for v in outputs)  # a loss or a metric: no channels from here on
            continue
        handler = HANDLERS.get(op.type)
        if handler is None:
            raise GroupError(f"{op.describe()}: the channel analysis does not know this op, so it cannot tell which "
                             "channels it ties together; channel pruning supports convolutions, BatchNorm, linear layers, "
                             "residual additions, squeeze-excitation, pooling, flatten and element-wise activations")
        handler(op, activations, spaces, spaces_of)
        constants.update(v.key for v in outputs if v.key not in spaces_of)  # side outputs: BatchNorm's statistics, dropout's mask
    for key, (node, _) in spaces_of.items():
        if key not in consumed:
            spaces.fix(node, OUTPUT)
    groups, index_of = _collect(spaces)
    return Channels(groups, {key: (index_of[spaces.find(node)], repeat) for key, (node, repeat) in spaces_of.items()
                             if spaces.find(node) in index_of})


def _activation_inputs(op, spaces, spaces_of, constants, produced):
    """The op's data inputs that carry channels; a value no op produced (a legacy feed) is the model's input."""
    found = []
    for slot, values in op.inputs.items():
        if slot not in ("x", "y"):
            continue
        for v in values:
            if v.param or v.key in constants:
                continue
            if v.key not in spaces_of:
                if v.key in produced:
                    raise GroupError(f"{op.describe()} reads a value the channel analysis could not follow from the op that made it")
                if len(v.shape) < 2:
                    continue
                spaces_of[v.key] = (spaces.new(v.shape[1], "it is the model's input"), 1)
            found.append(v)
    return found


def _conv(op, activations, spaces, spaces_of):
    x, weight, out = op.input("x"), op.input("filter"), op.out
    if weight is None or weight.param is None:
        raise GroupError(f"{op.describe()}: its filter is not a parameter; the channel analysis needs a learned filter")
    node, repeat = spaces_of[x.key]
    channels_in, groups = x.shape[1], int(op.attrs.get("groups", 1))
    if groups == 1:
        spaces.add(node, Member(weight.param, 1, CONSUMER))
        produced = spaces.new(weight.shape[0])
        spaces.add(produced, Member(weight.param, 0, PRODUCER))
        spaces_of[out.key] = (produced, 1)
    elif groups == channels_in == weight.shape[0]:  # depthwise: channel k in, channel k out
        spaces.add(node, Member(weight.param, 0, DEPTHWISE))
        spaces_of[out.key] = (node, 1)
    else:
        raise GroupError(f"{op.describe()}: a grouped convolution ({groups} groups over {channels_in} input channels, "
                         f"{weight.shape[0]} outputs) is not supported by channel pruning")


def _batch_norm(op, activations, spaces, spaces_of):
    node, repeat = spaces_of[op.input("x").key]
    for slot, role in (("scale", NORM_SCALE), ("bias", NORM_SHIFT), ("mean", STATISTIC), ("variance", STATISTIC)):
        value = op.input(slot)
        if value is not None and value.param:
            spaces.add(node, Member(value.param, 0, role))
    spaces_of[op.out.key] = (node, repeat)


def _elementwise(op, activations, spaces, spaces_of):
    x, y, out = op.input("x"), op.input("y"), op.out
    bias = next((v for v in (x, y) if v is not None and v.param), None)
    if bias is not None:  # a bias (conv: reshaped to [1, C, 1, 1]; linear: [C]) added to one activation
        node, repeat = spaces_of[activations[0].key]
        if int(np.prod(bias.shape)) != spaces.channels[spaces.find(node)] or repeat != 1:
            raise GroupError(f"{op.describe()}: parameter {bias.param} of shape {list(bias.shape)} is not one entry per channel")
        spaces.add(node, Member(bias.param, 0, BIAS))
        spaces_of[out.key] = (node, 1)
        return
    carriers = [v for v in activations if v.shape[1] != 1 or out.shape[1] == 1]
    if not carriers:
        carriers = activations
    node, repeat = spaces_of[carriers[0].key]
    for other in carriers[1:]:
        other_node, other_repeat = spaces_of[other.key]
        if other_repeat != repeat:
            raise GroupError(f"{op.describe()}: it combines maps of different layouts; the channel analysis cannot follow it")
        node = spaces.union(node, other_node, op)
    spaces_of[out.key] = (node, repeat)


def _matmul(op, activations, spaces, spaces_of):
    x, weight, out = op.input("x"), op.input("y"), op.out
    if weight is None or weight.param is None or op.attrs.get("transpose_x") or op.attrs.get("transpose_y") or len(weight.shape) != 2:
        raise GroupError(f"{op.describe()}: only x @ W with a learned 2-D W (a linear layer) is supported")
    node, repeat = spaces_of[x.key]
    if spaces.channels[spaces.find(node)] * repeat != weight.shape[0]:
        raise GroupError(f"{op.describe()}: {weight.param} has {weight.shape[0]} inputs, which is not a whole number of channels")
    spaces.add(node, Member(weight.param, 0, CONSUMER, repeat))
    produced = spaces.new(weight.shape[1])
    spaces.add(produced, Member(weight.param, 1, PRODUCER))
    spaces_of[out.key] = (produced, 1)


def _unary(op, activations, spaces, spaces_of):
    spaces_of[op.out.key] = spaces_of[activations[0].key]


def _flatten(op, activations, spaces, spaces_of):
    x, out = activations[0], op.out
    node, repeat = spaces_of[x.key]
    start, stop = op.attrs.get("start_axis", 1), op.attrs.get("stop_axis", -1)
    inner = x.shape[2:]
    if start != 1 or stop not in (-1, len(x.shape) - 1) or any(d < 0 for d in inner):
        raise GroupError(f"{op.describe()}: only a flatten of every axis after the channels (start_axis 1) is supported")
    spaces_of[out.key] = (node, repeat * int(np.prod(inner, dtype=np.int64)))


def _reshape(op, activations, spaces, spaces_of):
    x, out = activations[0], op.out
    node, repeat = spaces_of[x.key]
    spatial_in = int(np.prod(x.shape[2:], dtype=np.int64))
    spatial_out = int(np.prod(out.shape[2:], dtype=np.int64))
    if len(out.shape) < 2 or out.shape[1] != x.shape[1] or spatial_in != 1 or spatial_out != 1:
        raise GroupError(f"{op.describe()}: only a reshape that keeps the channel axis ([N, C, 1, 1] <-> [N, C]) is supported")
    spaces_of[out.key] = (node, repeat)


def _tile(op, activations, spaces, spaces_of):
    """A tile of the channels (a grey image repeated to RGB): neither side can be pruned."""
    node, _ = spaces_of[activations[0].key]
    spaces.fix(node, "it is repeated by a tile op")
    spaces_of[op.out.key] = (spaces.new(op.out.shape[1], "it is made by a tile op"), 1)


HANDLERS = {
    "conv2d": _conv,
    "depthwise_conv2d": _conv,
    "batch_norm": _batch_norm,
    "matmul": _matmul,
    "flatten": _flatten,
    "reshape": _reshape,
    "squeeze": _reshape,
    "unsqueeze": _reshape,
    "tile": _tile,
    **dict.fromkeys(ELEMENTWISE, _elementwise),
    **dict.fromkeys(UNARY, _unary),
}


def _collect(spaces):
    """(ChannelGroups, {root: group index}) from the union-find roots, in order of first appearance; spaces
    without parameters (an activation's own channels between two ops that carry none) make no group."""
    roots = []
    for node in range(len(spaces.parent)):
        root = spaces.find(node)
        if root not in roots:
            roots.append(root)
    owner = {}
    for root in roots:
        for m in spaces.members[root]:
            key = (m.param, m.axis)
            if key in owner and spaces.find(owner[key]) != spaces.find(root):
                raise GroupError(f"parameter {m.param} is used by ops whose channels are not the same; weight sharing is not supported by channel pruning")
            owner[key] = root
    groups, index_of = [], {}
    for root in roots:
        members = list(dict.fromkeys(spaces.members[root]))
        if members:
            index_of[root] = len(groups)
            groups.append(ChannelGroup(len(groups), spaces.channels[root], members, spaces.fixed.get(root)))
    return groups, index_of


def analyze(program):
    """The Channels of a static program (PIR or legacy IR; a training program reads as its forward part)."""
    return find_groups(graph.read(program))


def member_masks(groups, keeps, shapes):
    """{parameter: 0/1 float32 mask of its shape} from {group index: keep-vector} (1 keep, 0 remove) for every
    masked member of those groups; a parameter in two groups gets the product of both."""
    masks = {}
    for g in groups:
        if g.index not in keeps:
            continue
        keep = np.asarray(keeps[g.index], np.float32)
        for m in g.masked_members():
            along = np.repeat(keep, m.repeat)
            view = [1] * len(shapes[m.param])
            view[m.axis] = along.size
            mask = masks.setdefault(m.param, np.ones(shapes[m.param], np.float32))
            mask *= along.reshape(view)
    return masks


def slice_arrays(groups, kept, arrays):
    """{parameter: array} with every group's removed channels cut out of every member (statistics included);
    `kept` maps a group index to the sorted indices of its kept channels."""
    sliced = dict(arrays)
    for g in groups:
        if g.index not in kept:
            continue
        for m in g.members:
            rows = np.asarray(kept[g.index], np.int64)
            if m.repeat > 1:
                rows = (rows[:, None] * m.repeat + np.arange(m.repeat)).reshape(-1)
            sliced[m.param] = np.take(sliced[m.param], rows, axis=m.axis)
    return sliced
