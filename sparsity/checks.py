"""Argument validation, once for the library and the command lines.

Each check returns the value in its plain Python form or raises ValueError naming the argument,
the bad value and what is accepted. `name` is the argument's name in the message: the library
passes its keyword ('ratio'), a command line may pass its flag ('--ratio').
NumPy scalars are accepted wherever a number is, and 0/1 wherever a bool is (PaddleSlim's demo
parses bool flags with strtobool, which gives 1 and 0).
"""
import numbers

import numpy as np


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _is_integer(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def ratio(value, name="ratio"):
    """A fraction of weights to prune: a number in [0, 1)."""
    if not _is_number(value) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def threshold(value, name="threshold"):
    """A magnitude: a number >= 0."""
    if not _is_number(value) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


def flag(value, name):
    """True/False, also as 1/0 or a NumPy bool."""
    if isinstance(value, (bool, np.bool_)) or (_is_integer(value) and value in (0, 1)):
        return bool(value)
    raise ValueError(f"{name} must be True or False (or 1 / 0), got {value!r}")


def count(value, name, minimum=0):
    """An integer >= minimum (iterations, steps, periods)."""
    if not _is_integer(value) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def choice(value, name, accepted):
    """One of a few accepted values."""
    if value not in accepted:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, accepted))}, got {value!r}")
    return value


def block(value, name="sparse_block"):
    """Two positive integers [m, n]; returns (m, n)."""
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_integer(b) and b >= 1 for b in value)):
        raise ValueError(f"{name} must be two positive integers [m, n] such as [1, 1] or [2, 1], got {value!r}")
    return int(value[0]), int(value[1])


def nm_pattern(value, name="nm_pattern"):
    """Keep n of every m: two integers [n, m] with 1 <= n < m; returns (n, m)."""
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(map(_is_integer, value)) and 1 <= value[0] < value[1]):
        raise ValueError(f"{name} must be two integers [n, m] with 1 <= n < m (keep n of every m), such as [2, 4]; got {value!r}")
    return int(value[0]), int(value[1])


def norm_order(value, name="norm"):
    """The p of an Ln norm: a number >= 1, or inf (the largest magnitude)."""
    if not _is_number(value) or not value >= 1:
        raise ValueError(f"{name} must be a number >= 1 or float('inf'), got {value!r}")
    return float(value)


def local_sparsity_mode(local_sparsity, mode, local_name="local_sparsity", mode_name="mode"):
    """local_sparsity needs mode 'ratio' (PaddleSlim refuses it with 'threshold' too); returns it as a bool."""
    local = flag(local_sparsity, local_name)
    if local and mode != "ratio":
        raise ValueError(f"{local_name} True needs {mode_name} 'ratio', got {mode_name} {mode!r}: a threshold or an N:M pattern is the same for every layer already")
    return local
