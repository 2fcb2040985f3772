"""The forget spec of a run (forget_class / forget_fraction / forget_indices_file)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from unlearn_cli.data.dataset import ImageDataset
from unlearn_cli.data.forget_list import read_forget_list
from unlearn_cli.data.split import ForgetSplit, forget_tag, make_split

if TYPE_CHECKING:  # validate.py imports the dataset builders of this package
    from unlearn_cli.validate import RunConfig


def forget_tag_of(config: RunConfig) -> str:
    run = config.run
    stream = config.stream
    return forget_tag(run.forget_class, run.forget_fraction,
                      config.dataset.options.default_forget_class, run.forget_indices_file,
                      run.forget_within, stream.name, stream.options.file,
                      stream.options.steps, run.corruption.kind,
                      run.corruption.identified)  # fmt: skip


def split_from_config(data: ImageDataset, config: RunConfig) -> ForgetSplit:
    run = config.run
    ids = None if run.forget_indices_file is None else read_forget_list(run.forget_indices_file)
    return make_split(
        data, run.forget_class, run.forget_fraction, config.dataset.options.default_forget_class,
        run.seed, forget_ids=ids, within_class=run.forget_within, list_name=forget_tag_of(config),
        validation_fraction=run.validation_fraction,
        given_original=run.original.checkpoint is not None,
    )  # fmt: skip
