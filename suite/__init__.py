"""The stages of a user's pipeline, a room each; the command lines at the top of the tree call them.

    data.py      datasets (Fashion-MNIST, MNIST, CIFAR-10, ImageNet folders) and deterministic, sharded batches
    training/    flags, the static programs, the loop, resuming, multi-card set-up, progress log
    artefacts/   every file the suite reads or writes (checkpoint, weights in, sparse file) and the safe loader
    deploy/      export to what runtimes load (Paddle Inference, ONNX) and the runtimes themselves
    analysis/    evaluation of any artefact, sensitivity scans, plots
    cli.py       what the command lines share (argument parser, flag types, device); errors.py: exit statuses

Imports run one way, down this list: analysis, deploy, training, data, artefacts, then sparsity/ and models/;
no stage imports a command line.

Importing this package first (before paddle) prepares the process: Python's zlib is loaded before Paddle
2.6's bundled one (which otherwise crashes gzip reads), and Paddle's import-time and per-op chatter (C++
INFO/WARNING logs, repeated UserWarnings) is silenced unless GLOG_minloglevel is set.
"""
import os
import warnings
import zlib  # noqa: F401

os.environ.setdefault("GLOG_minloglevel", "2")
for message in ("No ccache found", "When training, we now always track global mean and variance", "Tensor do not have 'place' interface"):
    warnings.filterwarnings("ignore", message=message)
