"""Run train.py / evaluate.py as a user would: in a subprocess, with this test run's IR and Paddle."""
import builtins
import os
import resource
import signal
import subprocess
import sys

import numpy as np

from suite.artefacts import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# LeNet on 3,200 Fashion-MNIST images: 50 steps an epoch at batch 64, a few seconds per epoch on CPU.
QUICK = [
    "--data", "fashion_mnist", "--model", "LeNet", "--train_subset", "3200", "--test_subset", "1000",
    "--batch_size", "64", "--lr", "0.05", "--lr_strategy", "cosine_decay", "--log_period", "25", "--num_workers", "0",
]
GMP = ["--pruning_strategy", "gmp", "--ratio", "0.75", "--stable_epochs", "0", "--pruning_epochs", "2",
       "--tunning_epochs", "1", "--pruning_steps", "10", "--initial_ratio", "0.2"]


def run(script, *args, timeout=600, env=None, max_file_bytes=None):
    """Run a script of the suite; returns the CompletedProcess (text output).

    `max_file_bytes` makes the kernel refuse to grow any file past that size (RLIMIT_FSIZE: each write beyond it
    fails with EFBIG, as on a full disk), for whatever the process writes, however it writes it.
    """
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, script), *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        preexec_fn=(lambda: limit_file_size(max_file_bytes)) if max_file_bytes else None,
    )


def limit_file_size(max_bytes):
    """From now on, in this process and its children, a write that would grow a file past `max_bytes` fails with
    EFBIG (with SIGXFSZ ignored, as a full disk's writes fail with ENOSPC) instead of writing."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def start(script, *args, wrapper=None):
    """Start a script of the suite (optionally under a wrapper that patches it first), output line-buffered and merged."""
    module = os.path.splitext(script)[0]
    code = (wrapper or "") + f"\nimport sys, {module}\nfrom suite.errors import run_cli\nsys.exit(run_cli({module}.main, sys.argv[1:]))"
    return subprocess.Popen(
        [sys.executable, "-u", "-c", "import suite\n" + code, *map(str, args)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def error_lines(text):
    """The `error:` lines of a command's output."""
    return [line for line in text.splitlines() if line.startswith("error:")]


def check(result):
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
    return result


def saved_arrays(folder):
    """Every persistable of a checkpoint folder as {name: ndarray}."""
    return {k: np.asarray(v) for k, v in checkpoint.read_persistables(folder).items()}


def tree_snapshot(path):
    """{relative path: (size, mtime_ns)} of every file under path (empty when it does not exist)."""
    found = {}
    for top, _, files in os.walk(path):
        for name in files:
            full = os.path.join(top, name)
            stat = os.lstat(full)
            found[os.path.relpath(full, path)] = (stat.st_size, stat.st_mtime_ns)
    return found


def block_imports(monkeypatch, missing):
    """Make `import` fail as if a package were not installed: missing(name, fromlist) returns the module to name as
    missing (for `import name` or `from name import fromlist`), or None to import as usual."""
    real_import = builtins.__import__

    def guarded(name, globals=None, locals=None, fromlist=(), level=0):
        absent = missing(name, fromlist or ())
        if absent:
            raise ModuleNotFoundError(f"No module named '{absent}'")
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", guarded)
