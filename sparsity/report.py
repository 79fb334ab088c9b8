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


def count(name, values):
    """Zero (and NaN/Inf) counts of one parameter's values."""
    values = np.asarray(values)
    return LayerSparsity(name, tuple(values.shape), int(values.size), int(values.size - np.count_nonzero(values)), int(values.size - np.isfinite(values).sum()))


def layer_sparsity(scope, params):
    """Per-parameter counts for the given static.Param list, read from a static scope."""
    return [count(p.name, static.read(scope, p.name)) for p in params]


def overall(rows):
    """Fraction of zeros over all weights in the rows (0 for an empty set)."""
    size = sum(r.size for r in rows)
    return sum(r.zeros for r in rows) / size if size else 0.0


def summarize(rows, targets):
    """{'model': sparsity over all rows, 'pruned': over the pruned set, 'layers': per-layer dicts (with the
    target of each pruned one, None for the others), 'nonfinite': names holding NaN or Inf}.

    `targets` maps the pruned parameters' names to their target ratios (a list of names: targets unknown).
    """
    targets = targets if isinstance(targets, dict) else dict.fromkeys(targets)
    return {
        "model": overall(rows),
        "pruned": overall([r for r in rows if r.name in targets]),
        "layers": [
            {"name": r.name, "shape": list(r.shape), "size": r.size, "sparsity": r.sparsity, "pruned": r.name in targets, "target": targets.get(r.name)}
            for r in rows
        ],
        "nonfinite": [r.name for r in rows if r.nonfinite],
    }


def summary(scope, model_params, pruned_names):
    """summarize() of a static scope's parameters; `pruned_names` may be a {name: target} dict (pruner.targets())."""
    return summarize(layer_sparsity(scope, model_params), pruned_names)
