"""Datasets and the forget/retain/test split."""

from unlearn_cli.data.builders import DATASETS, load_dataset
from unlearn_cli.data.dataset import ImageDataset
from unlearn_cli.data.split import ForgetSplit, forget_tag, make_split

__all__ = ["DATASETS", "ForgetSplit", "ImageDataset", "forget_tag", "load_dataset", "make_split"]
