"""Checks of a composed config that must pass before any data is loaded or model trained."""

from __future__ import annotations

from omegaconf import DictConfig, ListConfig

from unlearn_cli.data import DATASETS
from unlearn_cli.data.feed import AUGMENTATIONS
from unlearn_cli.errors import UserError
from unlearn_cli.methods import METHODS
from unlearn_cli.models import MODELS
from unlearn_cli.training import OPTIMIZERS, SCHEDULES


def require(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def validate_train_cfg(train: DictConfig, where: str) -> None:
    require(
        isinstance(train.epochs, int) and train.epochs >= 1,
        f"{where}.epochs must be a whole number >= 1, got {train.epochs!r}",
    )
    require(
        isinstance(train.batch_size, int) and train.batch_size >= 1,
        f"{where}.batch_size must be a whole number >= 1, got {train.batch_size!r}",
    )
    require(is_number(train.lr) and train.lr > 0, f"{where}.lr must be > 0, got {train.lr!r}")
    require(
        is_number(train.weight_decay) and train.weight_decay >= 0,
        f"{where}.weight_decay must be >= 0, got {train.weight_decay!r}",
    )
    OPTIMIZERS.get(train.optimizer)
    for key in ("amp", "channels_last"):
        value = train.get(key, "auto")
        require(value in ("auto", True, False) and value is not None,
                f"{where}.{key} must be auto, true or false, got {value!r}")  # fmt: skip
    compile_opt = train.get("compile", False)
    require(compile_opt is True or compile_opt is False or isinstance(compile_opt, str),
            f"{where}.compile must be false, true or a torch.compile backend name, "
            f"got {compile_opt!r}")  # fmt: skip
    require(
        train.schedule in SCHEDULES,
        f"{where}.schedule must be one of {', '.join(SCHEDULES)}, got {train.schedule!r}",
    )


WHOLE_POSITIVE = ("epochs", "batch_size", "check_every", "newton_steps", "cg_iters")


def validate_method_cfg(method: DictConfig) -> None:
    """Range checks on the option names that methods share (counts, sizes, learning rates)."""
    for key, value in method.items():
        where = f"method.{key}"
        if key == "max_steps" and value is None:
            continue
        if key in WHOLE_POSITIVE or key == "max_steps":
            require(
                isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                f"{where} must be a whole number >= 1, got {value!r}",
            )
        elif key == "lr" or str(key).endswith("_lr"):
            require(is_number(value) and value > 0, f"{where} must be > 0, got {value!r}")
        elif key == "retain_weight" and method.name == "negative_gradient":
            require(
                is_number(value) and 0 <= value <= 1,
                f"{where} must be between 0 and 1, got {value!r}",
            )


def validate_dataset_cfg(dataset: DictConfig) -> None:
    """The loading options several datasets share (augmentation, storage, loader workers)."""
    augment = dataset.get("augment") or []
    require(
        isinstance(augment, ListConfig | list) and all(a in AUGMENTATIONS for a in augment),
        f"dataset.augment must be a list of {', '.join(AUGMENTATIONS)}, got {augment!r}",
    )
    if "storage" in dataset:
        require(
            dataset.storage in ("auto", "memory", "disk"),
            f"dataset.storage must be auto, memory or disk, got {dataset.storage!r}",
        )
        require(
            is_number(dataset.memory_limit_mb) and dataset.memory_limit_mb > 0,
            f"dataset.memory_limit_mb must be > 0, got {dataset.memory_limit_mb!r}",
        )
    workers = dataset.get("workers", "auto")
    require(
        workers == "auto" or (isinstance(workers, int) and not isinstance(workers, bool)
                              and workers >= 0),
        f"dataset.workers must be auto or a whole number >= 0, got {workers!r}",
    )  # fmt: skip


def validate_config(cfg: DictConfig) -> None:
    """Raise UserError with one clear line for the first problem found."""
    DATASETS.get(cfg.dataset.name)
    MODELS.get(cfg.model.name)
    METHODS.get(cfg.method.name)
    require(
        isinstance(cfg.seed, int) and not isinstance(cfg.seed, bool),
        f"seed must be a whole number, got {cfg.seed!r}",
    )
    given = [k for k in ("forget_class", "forget_fraction", "forget_indices_file")
             if cfg[k] is not None]  # fmt: skip
    require(len(given) <= 1, "give only one of forget_class, forget_fraction, "
                             f"forget_indices_file (got {' and '.join(given)})")  # fmt: skip
    if cfg.forget_fraction is not None:
        require(
            is_number(cfg.forget_fraction) and 0 < cfg.forget_fraction < 1,
            f"forget_fraction must be a number strictly between 0 and 1, "
            f"got {cfg.forget_fraction!r}",
        )
    validate_dataset_cfg(cfg.dataset)
    validate_train_cfg(cfg.model.train, "model.train")
    validate_method_cfg(cfg.method)
    require(
        isinstance(cfg.evaluation.batch_size, int) and cfg.evaluation.batch_size >= 1,
        f"evaluation.batch_size must be a whole number >= 1, got {cfg.evaluation.batch_size!r}",
    )
