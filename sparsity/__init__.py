"""Unstructured and semi-structured sparsity for PaddlePaddle static-graph training."""
from .pruner import GMPUnstructuredPruner, UnstructuredPruner
from .schedule import GMPSchedule

__all__ = ["UnstructuredPruner", "GMPUnstructuredPruner", "GMPSchedule"]
