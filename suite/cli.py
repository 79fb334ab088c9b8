"""What every command line shares: the argument parser (one `error:` line, exit 2), flag value types, and the device.

The command lines themselves (train.py, evaluate.py, export.py, sensitivity.py at the top of the tree) only
turn flags into calls of the stages under suite/ and print the results.
"""
import argparse
import math

import paddle

from sparsity import static
from suite.errors import ConfigError


def str2bool(text):
    """PaddleSlim-style boolean flags: --local_sparsity True / False (also 1/0, yes/no)."""
    value = str(text).strip().lower()
    if value in ("true", "1", "yes", "y"):
        return True
    if value in ("false", "0", "no", "n"):
        return False
    raise ValueError(f"expected True or False, got {text!r}")


class Parser(argparse.ArgumentParser):
    """argparse with the suite's error style: one `error:` line naming the flag, exit status 2."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _number(convert, accept, expected):
    """An argparse type: `convert(text)` if it is a number `accept` takes, else argparse's error naming the flag and `expected`."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    return parse


# Flag types that refuse what a silent default would otherwise replace (0 is not "the default")
positive_int = _number(int, lambda v: v >= 1, "an integer >= 1")
non_negative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number(float, lambda v: v > 0, "a number > 0")


def optional_name(text):
    """A flag value where 'None' (PaddleSlim scripts pass it) means no value."""
    return None if text in ("None", "none", "") else text


def choose_place(use_gpu):
    """GPU when Paddle has CUDA and one is visible (or --use_gpu True insists), else CPU."""
    has_gpu = paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if use_gpu and not has_gpu:
        raise ConfigError("--use_gpu True but this Paddle has no CUDA device; install paddlepaddle-gpu or pass --use_gpu False")
    if use_gpu is False:
        return paddle.CPUPlace()
    return static.default_place()
