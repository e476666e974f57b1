"""Evaluation suite: dataset builders (code search, pydoc pages, passkey, needle) and ranking metrics."""

from evaluation.datasets import DATASET_NAMES, load_dataset
from evaluation.metrics import evaluate_run, format_table
from evaluation.types import Dataset, EvalDoc, EvalQuery

__all__ = ["DATASET_NAMES", "Dataset", "EvalDoc", "EvalQuery", "evaluate_run", "format_table", "load_dataset"]
