"""Evaluation suite: dataset builders (code search, pydoc pages, passkey, needle) and ranking metrics."""

from longvec.evaluation.beir import load_beir
from longvec.evaluation.datasets import ALL_DATASET_NAMES, DATASET_NAMES, SOURCE_DATASET_NAMES, load_dataset
from longvec.evaluation.metrics import evaluate_run, format_table
from longvec.evaluation.types import Dataset, EvalDoc, EvalQuery

__all__ = [
    "ALL_DATASET_NAMES",
    "DATASET_NAMES",
    "SOURCE_DATASET_NAMES",
    "Dataset",
    "EvalDoc",
    "EvalQuery",
    "evaluate_run",
    "format_table",
    "load_beir",
    "load_dataset",
]
