"""Dataset builders, one per `configs/dataset/<name>.yaml`, looked up by name.

A builder takes the dataset's typed options and the cache folder; builders shared by several
names (the public sets, the tables) are registered once per name with that name bound."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Annotated, Literal

import numpy as np

from unlearn_cli.data import animal_mnist as animal_mnist_files
from unlearn_cli.data import disk_store
from unlearn_cli.data.dataset import ImageDataset, fixed_stats, from_arrays
from unlearn_cli.data.disk_store import decoded_bytes
from unlearn_cli.data.feed import TrainingFeed, default_workers
from unlearn_cli.data.imagefolder import Listing, list_folder, load_folder
from unlearn_cli.data.public import load_public
from unlearn_cli.data.tabular import BUNDLED, load_table, tabular_dataset
from unlearn_cli.errors import UserError
from unlearn_cli.options import (
    Count,
    Natural,
    NonNegative,
    Options,
    Positive,
    Range,
    fail,
    opt,
)
from unlearn_cli.registry import Choice, Registry

DatasetBuilder = Callable[[Options, Path], ImageDataset]
DATASETS: Registry[DatasetBuilder] = Registry("dataset")

# The train/test split never depends on the run seed: every run of a dataset shares one test set.
SPLIT_SEED = 0

ClassName = str | int | None  # a class name or index (digits' classes are "0".."9")
TestShare = Annotated[float, Range(gt=0, lt=1)]
Augment = list[Literal["crop", "flip"]]


@dataclass(frozen=True)
class AnimalMnistOptions(Options):
    default_forget_class: ClassName = opt("elephant", "the class forgotten when none is given")
    test_size: Annotated[int, Range(ge=10, le=9990)] = opt(2000, "test images (stratified)")
    train_limit: Annotated[int, Range(ge=100)] | None = opt(
        None, "train on a fixed stratified subset of this many images (null = all 8,000)"
    )


@dataclass(frozen=True)
class DigitsOptions(Options):
    default_forget_class: ClassName = opt("3", "the class forgotten when none is given")
    test_size: Annotated[int, Range(ge=10, le=1787)] = opt(360, "test images (stratified)")


@dataclass(frozen=True)
class SyntheticOptions(Options):
    default_forget_class: ClassName = opt("class1", "the class forgotten when none is given")
    num_classes: Annotated[int, Range(ge=2)] = opt(4, "classes")
    samples_per_class: Annotated[int, Range(ge=2)] = opt(60, "images per class")
    image_size: Count = opt(8, "image side in pixels")
    noise: NonNegative = opt(0.6, "Gaussian noise around each class prototype")
    test_size: Count = opt(48, "test images (stratified)")
    data_seed: Natural = opt(0, "the data are the same for every run seed")

    def check(self, where: str) -> None:
        total = self.num_classes * self.samples_per_class
        if not self.num_classes <= self.test_size <= total - self.num_classes:
            rule = f"between {self.num_classes} and {total - self.num_classes}"
            raise fail(where, "test_size", f"{rule} (one per class each side)", self.test_size)


@dataclass(frozen=True)
class ImageFolderOptions(Options):
    root: str | None = opt(None, "required: the folder of class folders")
    image_size: Count = opt(32, "images are resized to image_size x image_size")
    channels: Literal[1, 3] = opt(3, "3 = RGB, 1 = grayscale")
    test_size: TestShare = opt(0.2, "test share (stratified), unless train/ and test/ exist")
    default_forget_class: ClassName = opt(None, "give forget_class, forget_fraction or a list")
    storage: Literal["auto", "memory", "disk"] = opt(
        "auto", "disk: a memory-mapped store under cache_dir; auto: disk above memory_limit_mb"
    )
    memory_limit_mb: Positive = opt(2048, "decoded size above which storage=auto uses disk")
    workers: Literal["auto"] | Natural = opt("auto", "DataLoader workers (auto: cores-1, max 4)")
    augment: Augment = opt([], "training augmentation: any of crop, flip")
    normalise: Literal["dataset", "imagenet"] = opt(
        "dataset",
        "dataset: the training images' own mean/std; imagenet: the fixed ImageNet "
        "mean/std that pretrained torchvision weights expect (RGB)",
    )

    def check(self, where: str) -> None:
        if self.root is None:
            raise UserError(f"{where}.root is required: the folder of class folders "
                            "(root/<class>/<image>)")  # fmt: skip
        if self.normalise == "imagenet" and self.channels != 3:
            raise UserError(f"{where}.normalise=imagenet needs {where}.channels=3 (RGB)")


@dataclass(frozen=True)
class PublicOptions(Options):
    root: str = opt("${cache_dir}/datasets", "where the files are (or are downloaded to)")
    download: bool = opt(True, "try to download missing files (needs internet)")
    verify_checksums: bool = opt(True, "check pinned md5s before reading")
    default_forget_class: ClassName = opt("cat", "the class forgotten when none is given")
    augment: Augment = opt(["crop", "flip"], "training augmentation: any of crop, flip")


@dataclass(frozen=True)
class Cifar100Options(PublicOptions):
    default_forget_class: ClassName = opt("elephant", "the class forgotten when none is given")


@dataclass(frozen=True)
class FashionMnistOptions(PublicOptions):
    default_forget_class: ClassName = opt("Coat", "the class forgotten when none is given")


@dataclass(frozen=True)
class MnistOptions(PublicOptions):
    default_forget_class: ClassName = opt("3 - three", "the class forgotten when none is given")
    augment: Augment = opt(["crop"], "training augmentation (no flip: digits)")


@dataclass(frozen=True)
class TabularOptions(Options):
    default_forget_class: ClassName = opt(None, "give forget_class or forget_fraction")
    test_size: TestShare = opt(0.2, "test share (stratified)")
    path: str | None = opt(None, "csv only: the file")
    label_column: str = opt("label", "csv only: the column holding the class")


@dataclass(frozen=True)
class CsvOptions(TabularOptions):
    def check(self, where: str) -> None:
        if self.path is None:
            raise UserError(f"{where}.path is required for dataset.name=csv: the CSV file")


def stratified_split(labels: np.ndarray, test_size: int | float) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split  # imported late: slow to import

    idx = np.arange(len(labels))
    train_idx, test_idx = train_test_split(
        idx, test_size=test_size, stratify=labels, random_state=SPLIT_SEED
    )
    return np.sort(train_idx), np.sort(test_idx)


@DATASETS.register("animal_mnist", AnimalMnistOptions)
def animal_mnist(opts: AnimalMnistOptions, cache_dir: Path) -> ImageDataset:
    images, labels = animal_mnist_files.load_arrays(cache_dir)
    train_idx, test_idx = stratified_split(labels, opts.test_size)
    limit = opts.train_limit
    if limit is not None and limit < len(train_idx):  # a smaller set the model can memorise
        keep, _ = stratified_split(labels[train_idx], len(train_idx) - limit)
        train_idx = train_idx[keep]
    return from_arrays(
        "animal_mnist", animal_mnist_files.CLASSES, images, labels, train_idx, test_idx, 255.0
    )


@DATASETS.register("digits", DigitsOptions)
def digits(opts: DigitsOptions, cache_dir: Path) -> ImageDataset:
    from sklearn.datasets import load_digits  # bundled with scikit-learn, no download

    bunch = load_digits()
    images, labels = bunch.images.astype(np.float32), bunch.target.astype(np.int64)
    train_idx, test_idx = stratified_split(labels, opts.test_size)
    classes = tuple(str(c) for c in range(10))
    return from_arrays("digits", classes, images, labels, train_idx, test_idx, 16.0)


@DATASETS.register("synthetic", SyntheticOptions)
def synthetic(opts: SyntheticOptions, cache_dir: Path) -> ImageDataset:
    """Each class is a random prototype image; samples are the prototype plus Gaussian noise."""
    rng = np.random.default_rng(opts.data_seed)
    k, n, s = opts.num_classes, opts.samples_per_class, opts.image_size
    prototypes = rng.normal(size=(k, s, s)).astype(np.float32)
    labels = np.repeat(np.arange(k), n)
    images = prototypes[labels] + opts.noise * rng.normal(size=(k * n, s, s)).astype(np.float32)
    train_idx, test_idx = stratified_split(labels, opts.test_size)
    classes = tuple(f"class{c}" for c in range(k))
    return from_arrays("synthetic", classes, images, labels, train_idx, test_idx)


def loader_workers(opts: ImageFolderOptions) -> int:
    return default_workers() if opts.workers == "auto" else int(opts.workers)


def use_disk(opts: ImageFolderOptions, listing: Listing) -> bool:
    if opts.storage == "auto":
        return decoded_bytes(opts, listing) > float(opts.memory_limit_mb) * 2**20
    return opts.storage == "disk"


@DATASETS.register("imagefolder", ImageFolderOptions)
def imagefolder(opts: ImageFolderOptions, cache_dir: Path) -> ImageDataset:
    listing = list_folder(opts)
    workers = loader_workers(opts)

    def split_rule(kept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if listing.is_train is None:
            return stratified_split(listing.labels[kept], opts.test_size)
        return np.flatnonzero(listing.is_train[kept]), np.flatnonzero(~listing.is_train[kept])

    augment = tuple(opts.augment)
    if use_disk(opts, listing):
        data = disk_store.load_or_build(opts, listing, cache_dir, workers, split_rule, augment)
        return replace(data, fingerprint=listing.fingerprint())
    images, labels, ids, kept = load_folder(opts, listing, workers)
    train_idx, test_idx = split_rule(np.asarray(kept))
    data = from_arrays("imagefolder", listing.classes, images, labels, train_idx, test_idx, 255.0,
                       stats=fixed_stats(opts.normalise))  # fmt: skip
    return replace(data, train_ids=tuple(ids[i] for i in train_idx),
                   feed=TrainingFeed(augment=augment),
                   fingerprint=listing.fingerprint())  # fmt: skip


def public(opts: PublicOptions, cache_dir: Path, name: str) -> ImageDataset:
    (x_train, y_train), (x_test, y_test), classes = load_public(name, opts)
    images, labels = np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test])
    n = len(y_train)
    train_idx, test_idx = np.arange(n), np.arange(n, n + len(y_test))
    data = from_arrays(name, classes, images, labels, train_idx, test_idx, 255.0)
    return replace(data, feed=TrainingFeed(augment=tuple(opts.augment)))


PUBLIC = {"cifar10": PublicOptions, "cifar100": Cifar100Options, "mnist": MnistOptions,
          "fashion_mnist": FashionMnistOptions}  # fmt: skip
for _name, _options in PUBLIC.items():
    DATASETS.register(_name, _options)(partial(public, name=_name))


def tabular(opts: TabularOptions, cache_dir: Path, name: str) -> ImageDataset:
    """A bundled table (breast_cancer, wine, iris) or `csv` (dataset.path, dataset.label_column)."""
    x, y, classes = load_table(name, opts)
    train_idx, test_idx = stratified_split(y, opts.test_size)
    return tabular_dataset(name, opts, train_idx, test_idx, x, y, classes)


for _table in BUNDLED:  # `dataset=tabular dataset.name=<table>`
    DATASETS.register(_table, TabularOptions)(partial(tabular, name=_table))
DATASETS.register("csv", CsvOptions)(partial(tabular, name="csv"))


# Options that change how data is loaded, never what is loaded: left out of model cache keys, so
# streaming a folder (or using more workers) reuses the models trained in memory.
LOADING_ONLY = ("storage", "memory_limit_mb", "workers")


def dataset_key(dataset: Choice, data: ImageDataset) -> dict:
    """The dataset config as it enters model cache keys, with the content fingerprint of user
    data (an image folder or CSV edited in place must not reuse models trained on the old)."""
    key = {k: v for k, v in dataset.plain().items() if k not in LOADING_ONLY}
    return {**key, "content": data.fingerprint} if data.fingerprint else key


def load_dataset(dataset: Choice, cache_dir: Path | str) -> ImageDataset:
    return DATASETS.get(dataset.name)(dataset.options, Path(cache_dir))
