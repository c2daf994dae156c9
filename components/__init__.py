"""Pipeline steps with explicit inputs and outputs; all I/O (datasets, artifacts, tracking) lives here."""

from components.datasets import DATASETS, load_dataset, read_cifar_pickle, read_idx

__all__ = ["DATASETS", "load_dataset", "read_cifar_pickle", "read_idx"]
