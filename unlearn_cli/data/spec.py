"""The forget spec of a run's config (forget_class / forget_fraction / forget_indices_file)."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from unlearn_cli.data.dataset import ImageDataset
from unlearn_cli.data.forget_list import read_forget_list
from unlearn_cli.data.split import ForgetSplit, forget_tag, make_split


def forget_tag_of(cfg: DictConfig) -> str:
    return forget_tag(cfg.forget_class, cfg.forget_fraction, cfg.dataset.default_forget_class,
                      cfg.forget_indices_file, cfg.forget_within)  # fmt: skip


def split_from_config(data: ImageDataset, cfg: DictConfig) -> ForgetSplit:
    ids = None if cfg.forget_indices_file is None else read_forget_list(cfg.forget_indices_file)
    return make_split(
        data, cfg.forget_class, cfg.forget_fraction, cfg.dataset.default_forget_class, cfg.seed,
        forget_ids=ids, within_class=cfg.forget_within, list_name=forget_tag_of(cfg),
        validation_fraction=cfg.validation_fraction,
        given_original=OmegaConf.select(cfg, "original.checkpoint") is not None,
    )  # fmt: skip
