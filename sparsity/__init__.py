"""Unstructured, semi-structured and structured sparsity for PaddlePaddle: static programs and dygraph models."""
from . import rules
from .channel_pruner import ChannelPruner, GMPChannelPruner
from .dygraph import PruningCallback
from .pruner import GMPUnstructuredPruner, UnstructuredPruner
from .schedule import ConstantSchedule, GMPSchedule
from .selection import read_ratios_file

__all__ = [
    "ChannelPruner",
    "ConstantSchedule",
    "GMPChannelPruner",
    "GMPSchedule",
    "GMPUnstructuredPruner",
    "PruningCallback",
    "UnstructuredPruner",
    "read_ratios_file",
    "rules",
]
