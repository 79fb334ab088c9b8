"""Sparsity figures read from a scope: whole model, pruned set, and per layer."""
from dataclasses import dataclass

import numpy as np

from . import static


@dataclass(frozen=True)
class LayerSparsity:
    name: str
    shape: tuple
    size: int
    zeros: int
    nonfinite: int = 0

    @property
    def sparsity(self):
        return self.zeros / self.size if self.size else 0.0


def layer_sparsity(scope, params):
    """Per-parameter zero (and NaN/Inf) counts for the given static.Param list."""
    return array_sparsity({p.name: static.read(scope, p.name) for p in params})


def array_sparsity(arrays):
    """Per-array zero (and NaN/Inf) counts for {name: array}."""
    return [
        LayerSparsity(name, tuple(v.shape), int(v.size), int(v.size - np.count_nonzero(v)), int(v.size - np.isfinite(v).sum()))
        for name, v in arrays.items()
    ]


def overall(rows):
    """Fraction of zeros over all weights in the rows (0 for an empty set)."""
    size = sum(r.size for r in rows)
    return sum(r.zeros for r in rows) / size if size else 0.0


def summary(scope, model_params, pruned_names):
    """{'model': sparsity over all parameters, 'pruned': over the pruned set, 'layers': per-layer rows,
    'nonfinite': names of parameters holding NaN or Inf}."""
    return summarize(layer_sparsity(scope, model_params), pruned_names)


def summarize(rows, pruned_names):
    """The summary() dict of LayerSparsity rows."""
    pruned_names = set(pruned_names)
    return {
        "model": overall(rows),
        "pruned": overall([r for r in rows if r.name in pruned_names]),
        "layers": [
            {"name": r.name, "shape": list(r.shape), "size": r.size, "sparsity": r.sparsity, "pruned": r.name in pruned_names}
            for r in rows
        ],
        "nonfinite": [r.name for r in rows if r.nonfinite],
    }
