"""The training side of the suite: data, programs, loop, checkpoints, logging, multi-card set-up.

Importing it first (before paddle) prepares the process: Python's zlib is loaded before Paddle
2.6's bundled one (which otherwise crashes gzip reads), and Paddle's import-time and per-op
chatter (C++ INFO/WARNING logs, repeated UserWarnings) is silenced unless GLOG_minloglevel is set.
"""
import os
import warnings
import zlib  # noqa: F401

os.environ.setdefault("GLOG_minloglevel", "2")
for message in ("No ccache found", "When training, we now always track global mean and variance", "Tensor do not have 'place' interface"):
    warnings.filterwarnings("ignore", message=message)
