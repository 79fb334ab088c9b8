"""Mask rules, one per granularity: a weight -> one score per pruning unit -> a keep-mask of the weight's shape.

Every rule has the same small interface, written with Paddle ops so one implementation serves the
static binding (PIR and legacy IR) and the dygraph binding:

- `check(shape)`: raise ValueError when the rule cannot prune a weight of this shape;
- `scores(w, offset)`: non-negative score of every unit (higher = more important); `offset` is the
  position of w's first element in the pruned set (used by Random only);
- `unit_sizes(shape)`: int64 tensor, the number of weights in each unit (built on the device from a
  few numbers), or None when every unit is one weight; selections count pruned *weights* with it,
  so a ratio always means a fraction of weights, whatever the unit;
- `expand(keep, shape)`: a keep-mask of the units -> a mask of the weight.

Scores of units of different sizes are size-normalised (means, not sums), so one global threshold
compares them fairly.
"""
import math

import numpy as np
import paddle

from . import checks, ops


class Rule:
    """Base: one unit per weight, scored by |w|."""

    name = "element"
    magnitude = True  # scores are magnitudes, so a fixed threshold means something
    fixed_pattern = False  # True: the rule chooses its own mask (N:M), no ratio or threshold

    def check(self, shape):
        """Weights of any shape can be pruned element by element."""

    def scores(self, w, offset=0):
        return ops.abs(w)

    def unit_sizes(self, shape):
        return None

    def expand(self, keep, shape):
        return keep

    def __repr__(self):
        options = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({options})"

    def __eq__(self, other):
        return type(self) is type(other) and vars(self) == vars(other)


class Element(Rule):
    """Unstructured: every weight on its own, scored by |w|."""


class Block(Rule):
    """m x n blocks of a weight's first two dimensions, scored by the mean |w| over the block.

    On a conv weight [out, in, kh, kw] a block is, by default, a whole m x n x kh x kw slab (as
    PaddleSlim prunes); `per_position=True` makes every kernel position a separate m x n block.
    Edge blocks of ragged shapes are scored over their real weights only.
    """

    name = "block"

    def __init__(self, m=2, n=1, per_position=False):
        self.m, self.n = checks.block([m, n], "block [m, n]")
        self.per_position = checks.flag(per_position, "per_position")

    def check(self, shape):
        if len(shape) < 2:
            raise ValueError(f"{self!r} needs weights with at least 2 dimensions, got shape {list(shape)}")

    def _grid(self, shape):
        """[rows, cols, kernel positions] of the units, and the kernel positions of the weight."""
        rest = int(np.prod(shape[2:])) if len(shape) > 2 else 1
        return [math.ceil(shape[0] / self.m), math.ceil(shape[1] / self.n), rest if self.per_position else 1], rest

    def _edges(self, shape):
        """NumPy int64 rows per block row and columns per block column (smaller at ragged edges)."""
        (g0, g1, _), _ = self._grid(shape)
        return np.minimum(self.m, shape[0] - self.m * np.arange(g0)), np.minimum(self.n, shape[1] - self.n * np.arange(g1))

    def unit_sizes(self, shape):
        grid, rest = self._grid(shape)
        rows, cols = (paddle.assign(v.astype("int64")) for v in self._edges(shape))
        cells = paddle.reshape(rows, [grid[0], 1, 1]) * paddle.reshape(cols, [1, grid[1], 1])
        return paddle.expand(cells, grid) if self.per_position else cells * paddle.full([1], rest, "int64")

    def scores(self, w, offset=0):
        shape = list(w.shape)
        (g0, g1, _), rest = self._grid(shape)
        m, n = self.m, self.n
        a = paddle.reshape(ops.abs(w), [shape[0], shape[1], rest])
        pad0, pad1 = g0 * m - shape[0], g1 * n - shape[1]
        if pad0:
            a = paddle.concat([a, paddle.zeros([pad0, shape[1], rest], a.dtype)], axis=0)
        if pad1:
            a = paddle.concat([a, paddle.zeros([g0 * m, pad1, rest], a.dtype)], axis=1)
        blocks = paddle.reshape(a, [g0, m, g1, n, rest])
        means = paddle.mean(blocks, axis=[1, 3]) if self.per_position else paddle.mean(blocks, axis=[1, 3, 4], keepdim=True)
        means = paddle.reshape(means, self._grid(shape)[0])
        if pad0 or pad1:  # the mean over a padded block counted the zero padding: rescale to the real weights
            rows, cols = self._edges(shape)
            means = means * paddle.assign((m * n / np.outer(rows, cols)).astype("float32")[:, :, None])
        return means

    def expand(self, keep, shape):
        (g0, g1, r), rest = self._grid(shape)
        m, n = self.m, self.n
        full = paddle.expand(paddle.reshape(keep, [g0, 1, g1, 1, r]), [g0, m, g1, n, rest])
        full = paddle.reshape(full, [g0 * m, g1 * n, rest])
        if g0 * m != shape[0] or g1 * n != shape[1]:
            full = full[: shape[0], : shape[1]]
        return paddle.reshape(full, list(shape))


class Channel(Rule):
    """Whole slices along dimension `dim` (0: conv filters / output channels; 1: conv input channels),
    scored by their size-normalised Ln norm (mean of |w|^p)^(1/p), or max |w| for p = inf.

    `dim` is the tensor dimension, as in torch.nn.utils.prune.ln_structured: for a Linear weight
    [in, out], dim 0 prunes inputs and dim 1 outputs.
    """

    name = "channel"

    def __init__(self, dim=0, norm=2):
        self.dim = checks.choice(dim, "dim", (0, 1))
        self.norm = checks.norm_order(norm)

    def check(self, shape):
        if len(shape) < 2:
            raise ValueError(f"{self!r} needs weights with at least 2 dimensions, got shape {list(shape)}")

    def scores(self, w, offset=0):
        shape = list(w.shape)
        perm = [self.dim] + [i for i in range(len(shape)) if i != self.dim]
        rows = paddle.reshape(paddle.transpose(ops.abs(w), perm), [shape[self.dim], -1])
        if math.isinf(self.norm):
            return paddle.max(rows, axis=1)
        return paddle.pow(paddle.mean(paddle.pow(rows, self.norm), axis=1), 1.0 / self.norm)

    def unit_sizes(self, shape):
        return paddle.full([shape[self.dim]], int(np.prod(shape)) // shape[self.dim], "int64")

    def expand(self, keep, shape):
        along = [1] * len(shape)
        along[self.dim] = shape[self.dim]
        return paddle.expand(paddle.reshape(keep, along), list(shape))


# Random scores: a bijection of the element index over the integers mod a prime, so distinct
# indices never tie; x -> x^5 is a bijection because 5 does not divide PRIME - 1.
PRIME = (1 << 31) - 1
MIXERS = ((1103515245, 12345), (2147480837, 40503))


class Random(Rule):
    """A seeded random ranking, the baseline magnitude pruning is compared against.

    The score of the i-th weight of the pruned set is a fixed hash of (seed, i) computed with Paddle
    integer ops on the device: the same seed gives the same masks in static and dygraph and after a
    resume, and masks of a rising GMP ratio are nested. Needs fewer than 2^31 - 1 pruned weights.
    """

    name = "random"
    magnitude = False

    def __init__(self, seed=0):
        self.seed = checks.count(seed, "seed")

    def scores(self, w, offset=0):
        # int64 tensors, not Python scalars: a static program would scale by a float and round
        def const(value):
            return paddle.full([1], value, "int64")

        prime = const(PRIME)
        numel = int(np.prod(w.shape))
        x = paddle.arange(offset, offset + numel, dtype="int64")
        for multiplier, increment in MIXERS:
            x = paddle.remainder(x * const(multiplier) + const((increment + self.seed) % PRIME), prime)
            square = paddle.remainder(x * x, prime)
            x = paddle.remainder(paddle.remainder(square * square, prime) * x, prime)
        return paddle.reshape(paddle.cast(x, "float64"), list(w.shape))


class NM(Rule):
    """N:M: keep the n largest |w| of every m consecutive weights along the input axis
    (axis 1 of a conv weight [out, in, kh, kw], axis 0 of a Linear weight [in, out]).

    A ragged last group keeps its n largest too, so an axis shorter than n (depthwise convs) stays
    dense. The pattern fixes the ratio (1 - n/m); ties are broken by position.
    """

    name = "nm"
    fixed_pattern = True

    def __init__(self, n=2, m=4):
        self.n, self.m = checks.nm_pattern([n, m])

    @staticmethod
    def axis(shape):
        return 1 if len(shape) == 4 else 0

    def pattern_keep(self, scores):
        """The N:M keep-mask of a weight's |w| scores."""
        n, m = self.n, self.m
        shape = list(scores.shape)
        axis = self.axis(shape)
        perm = [i for i in range(len(shape)) if i != axis] + [axis]
        length = shape[axis]
        rows = int(np.prod([shape[i] for i in perm[:-1]]))
        a = paddle.reshape(paddle.transpose(scores, perm), [rows, length])
        pad = -length % m
        if pad:  # padding scores below any real one are chosen last
            a = paddle.concat([a, paddle.full([rows, pad], -1.0, a.dtype)], axis=1)
        groups = paddle.reshape(a, [-1, m])
        chosen = paddle.topk(groups, n, axis=-1)[1]
        keep = paddle.put_along_axis(paddle.zeros_like(groups), chosen, paddle.full([groups.shape[0], n], 1.0, a.dtype), axis=-1)
        keep = paddle.reshape(keep, [rows, length + pad])
        if pad:
            keep = keep[:, :length]
        keep = paddle.reshape(keep, [shape[i] for i in perm])
        return paddle.transpose(keep, [perm.index(i) for i in range(len(shape))])


RULES = {rule.name: rule for rule in (Element, Block, Channel, Random, NM)}


def create(name, **options):
    """A rule by name ('element', 'block', 'channel', 'random', 'nm') and its options, e.g. create('block', m=2, n=1)."""
    if name not in RULES:
        raise ValueError(f"granularity must be one of {', '.join(map(repr, RULES))}, got {name!r}")
    try:
        return RULES[name](**options)
    except TypeError as exc:
        raise ValueError(f"granularity {name!r} does not take these options: {exc}") from exc


def from_paddleslim(mode, sparse_block, nm_pattern):
    """The rule PaddleSlim's arguments mean: N:M for mode 'nm', m x n slabs for sparse_block != [1, 1], else element."""
    m, n = checks.block(sparse_block)
    if mode == "nm":
        if (m, n) != (1, 1):
            raise ValueError(f"mode 'nm' prunes n of every m single weights; sparse_block must stay [1, 1], got {list(sparse_block)}")
        return NM(*checks.nm_pattern(nm_pattern))
    return Element() if (m, n) == (1, 1) else Block(m, n)
