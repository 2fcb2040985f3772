"""Dataset builders, one per `configs/dataset/<name>.yaml`, looked up by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from unlearn_cli.data import animal_mnist as animal_mnist_files
from unlearn_cli.data import disk_store
from unlearn_cli.data.dataset import ImageDataset, from_arrays
from unlearn_cli.data.disk_store import decoded_bytes
from unlearn_cli.data.feed import TrainingFeed, default_workers
from unlearn_cli.data.imagefolder import Listing, list_folder, load_folder
from unlearn_cli.data.public import load_public
from unlearn_cli.data.tabular import BUNDLED, load_table, tabular_dataset
from unlearn_cli.registry import Registry

DatasetBuilder = Callable[[DictConfig, Path], ImageDataset]
DATASETS: Registry[DatasetBuilder] = Registry("dataset")

# The train/test split never depends on the run seed: every run of a dataset shares one test set.
SPLIT_SEED = 0


def stratified_split(labels: np.ndarray, test_size: int | float) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split  # imported late: slow to import

    idx = np.arange(len(labels))
    train_idx, test_idx = train_test_split(
        idx, test_size=test_size, stratify=labels, random_state=SPLIT_SEED
    )
    return np.sort(train_idx), np.sort(test_idx)


@DATASETS.register("animal_mnist")
def animal_mnist(cfg: DictConfig, cache_dir: Path) -> ImageDataset:
    images, labels = animal_mnist_files.load_arrays(cache_dir)
    train_idx, test_idx = stratified_split(labels, cfg.test_size)
    return from_arrays(
        "animal_mnist", animal_mnist_files.CLASSES, images, labels, train_idx, test_idx, 255.0
    )


@DATASETS.register("digits")
def digits(cfg: DictConfig, cache_dir: Path) -> ImageDataset:
    from sklearn.datasets import load_digits  # bundled with scikit-learn, no download

    bunch = load_digits()
    images, labels = bunch.images.astype(np.float32), bunch.target.astype(np.int64)
    train_idx, test_idx = stratified_split(labels, cfg.test_size)
    classes = tuple(str(c) for c in range(10))
    return from_arrays("digits", classes, images, labels, train_idx, test_idx, 16.0)


@DATASETS.register("synthetic")
def synthetic(cfg: DictConfig, cache_dir: Path) -> ImageDataset:
    """Each class is a random prototype image; samples are the prototype plus Gaussian noise."""
    rng = np.random.default_rng(cfg.data_seed)
    k, n, s = int(cfg.num_classes), int(cfg.samples_per_class), int(cfg.image_size)
    prototypes = rng.normal(size=(k, s, s)).astype(np.float32)
    labels = np.repeat(np.arange(k), n)
    images = prototypes[labels] + cfg.noise * rng.normal(size=(k * n, s, s)).astype(np.float32)
    train_idx, test_idx = stratified_split(labels, cfg.test_size)
    classes = tuple(f"class{c}" for c in range(k))
    return from_arrays("synthetic", classes, images, labels, train_idx, test_idx)


def loader_workers(cfg: DictConfig) -> int:
    workers = cfg.get("workers", "auto")
    return default_workers() if workers == "auto" else int(workers)


def augmentations(cfg: DictConfig) -> tuple[str, ...]:
    return tuple(cfg.get("augment") or ())


def use_disk(cfg: DictConfig, listing: Listing) -> bool:
    if cfg.storage == "auto":
        return decoded_bytes(cfg, listing) > float(cfg.memory_limit_mb) * 2**20
    return cfg.storage == "disk"


@DATASETS.register("imagefolder")
def imagefolder(cfg: DictConfig, cache_dir: Path) -> ImageDataset:
    listing = list_folder(cfg)
    workers = loader_workers(cfg)

    def split_rule(kept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if listing.is_train is None:
            return stratified_split(listing.labels[kept], cfg.test_size)
        return np.flatnonzero(listing.is_train[kept]), np.flatnonzero(~listing.is_train[kept])

    if use_disk(cfg, listing):
        return disk_store.load_or_build(
            cfg, listing, cache_dir, workers, split_rule, augmentations(cfg)
        )
    images, labels, ids, kept = load_folder(cfg, listing, workers)
    train_idx, test_idx = split_rule(np.asarray(kept))
    data = from_arrays("imagefolder", listing.classes, images, labels, train_idx, test_idx, 255.0)
    return replace(data, train_ids=tuple(ids[i] for i in train_idx),
                   feed=TrainingFeed(augment=augmentations(cfg)))  # fmt: skip


def public(cfg: DictConfig, cache_dir: Path) -> ImageDataset:
    (x_train, y_train), (x_test, y_test), classes = load_public(cfg)
    images, labels = np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test])
    n = len(y_train)
    train_idx, test_idx = np.arange(n), np.arange(n, n + len(y_test))
    data = from_arrays(cfg.name, classes, images, labels, train_idx, test_idx, 255.0)
    return replace(data, feed=TrainingFeed(augment=augmentations(cfg)))


for _name in ("cifar10", "cifar100", "mnist", "fashion_mnist"):
    DATASETS.register(_name)(public)


def tabular(cfg: DictConfig, cache_dir: Path) -> ImageDataset:
    """A bundled table (breast_cancer, wine, iris) or `csv` (dataset.path, dataset.label_column)."""
    x, y, classes = load_table(cfg)
    train_idx, test_idx = stratified_split(y, cfg.test_size)
    return tabular_dataset(cfg, train_idx, test_idx, x, y, classes)


for _table in (*BUNDLED, "csv"):  # `dataset=tabular dataset.name=<table>`
    DATASETS.register(_table)(tabular)


# Options that change how data is loaded, never what is loaded: left out of model cache keys, so
# streaming a folder (or using more workers) reuses the models trained in memory.
LOADING_ONLY = ("storage", "memory_limit_mb", "workers")


def dataset_key(cfg: DictConfig) -> dict:
    """The dataset config as it enters model cache keys."""
    data = OmegaConf.to_container(cfg, resolve=True)
    return {k: v for k, v in data.items() if k not in LOADING_ONLY}


def load_dataset(cfg: DictConfig, cache_dir: Path | str) -> ImageDataset:
    return DATASETS.get(cfg.name)(cfg, Path(cache_dir))
