"""Tabular data for the convex setting: scikit-learn's bundled tables or a CSV file.

Rows become (1, 1, n_features) "images" so `logistic` and `mlp` take them as they are; features
are standardised one by one with statistics of the training part.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from unlearn_cli.data.dataset import ImageDataset
from unlearn_cli.errors import UserError

if TYPE_CHECKING:  # the schema lives with the builders, which import this module
    from unlearn_cli.data.builders import TabularOptions

BUNDLED = ("breast_cancer", "wine", "iris")


def load_table(name: str, opts: TabularOptions) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Features (n, d) float32, labels (n,) int64 and class names."""
    if name in BUNDLED:
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, f"load_{name}")()
        return (
            bunch.data.astype(np.float32),
            bunch.target.astype(np.int64),
            tuple(str(c) for c in bunch.target_names),
        )
    return load_csv(Path(str(opts.path)), str(opts.label_column))


def load_csv(path: Path, label_column: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    if not path.is_file():
        raise UserError(f"dataset.path: no CSV file at {path}")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise UserError(f"cannot read {path} as CSV: {exc}") from exc
    if label_column not in frame.columns:
        raise UserError(f"{path.name} has no column '{label_column}'; columns: "
                        f"{', '.join(map(str, frame.columns))}")  # fmt: skip
    features = frame.drop(columns=[label_column])
    bad = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if bad:
        raise UserError(f"{path.name}: feature columns must be numeric; not: {', '.join(bad[:5])}")
    if features.isna().any().any():
        raise UserError(f"{path.name} has empty cells; fill or drop them first")
    infinite = [str(c) for c in features.columns if np.isinf(features[c].to_numpy(float)).any()]
    if infinite:  # pandas reads "inf" as a number; it would make every standardised row nan
        raise UserError(f"{path.name}: feature columns hold infinite values: "
                        f"{', '.join(infinite[:5])}")  # fmt: skip
    classes, labels = np.unique(frame[label_column].astype(str), return_inverse=True)
    return features.to_numpy(np.float32), labels.astype(np.int64), tuple(classes)


def tabular_dataset(
    name: str, opts: TabularOptions, train_idx, test_idx, x, y, classes
) -> ImageDataset:
    x_train, x_test = x[train_idx], x[test_idx]
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
    to_rows = lambda a: torch.as_tensor((a - mean) / std).reshape(len(a), 1, 1, -1)  # noqa: E731
    return ImageDataset(
        name=name,
        classes=classes,
        x_train=to_rows(x_train).contiguous(),
        y_train=torch.as_tensor(y[train_idx]),
        x_test=to_rows(x_test).contiguous(),
        y_test=torch.as_tensor(y[test_idx]),
        train_ids=tuple(int(i) for i in train_idx),
        fingerprint=file_sha256(Path(str(opts.path))) if name == "csv" else "",
    )


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
