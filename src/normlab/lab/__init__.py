"""The convergence lab: what each normalization scheme does to training, measured.

``compare(...)`` trains one model under several schemes over a fair learning-rate grid and
writes ``results.json``, plots and a self-contained ``report.html`` (see :mod:`normlab.lab.report`).
Needs the ``lab`` extra (torch, matplotlib, mlxtend, scikit-learn); importing this package
does not import torch.
"""

from __future__ import annotations

from .datasets import Dataset, dataset_names, load_arrays, load_dataset
from .runner import compare, demo_comparison

__all__ = ["Dataset", "compare", "dataset_names", "demo_comparison", "load_arrays", "load_dataset"]
