"""The `logger` node (configs/logger): which trackers a run is sent to, and how."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Annotated

from unlearn_cli.errors import UserError
from unlearn_cli.options import Options, Range, opt

# The package each tracker imports, and the extra that installs it.
PACKAGES = {"mlflow": ("mlflow", "mlflow"), "tensorboard": ("tensorboard", "tensorboard")}


@dataclass(frozen=True)
class MlflowOptions(Options):
    """`logger.mlflow`: the run sent to an MLflow tracking store when it ends."""

    enabled: bool = opt(False, "send the run to MLflow (logger=mlflow)")
    tracking_uri: str = opt(
        "sqlite:///outputs/mlflow.db",
        "the tracking store: a local SQLite file (MLflow's own default kind of store), or a "
        "server, http://host:5000",
    )
    experiment: str = opt(
        "auto", "the MLflow experiment; auto = unlearn-<dataset> (a sweep is a parent run in it)"
    )
    checkpoint: bool = opt(False, "also send the unlearned model's checkpoint (large)")
    timeout: Annotated[float, Range(gt=0, le=600)] = opt(
        10.0,
        "seconds a tracking server may take to answer one request, without retries: a server "
        "that does not answer delays the end of a run by about this, once",
    )


@dataclass(frozen=True)
class TensorboardOptions(Options):
    """`logger.tensorboard`: TensorBoard event files in the run folder."""

    enabled: bool = opt(False, "write TensorBoard event files (logger=tensorboard)")
    dir: str = opt("tensorboard", "their folder inside the run folder")


@dataclass(frozen=True)
class CsvOptions(Options):
    """`logger.csv`: every scalar the trackers get, as one long table in the run folder."""

    enabled: bool = opt(False, "write the run's scalars as name,step,value (logger=csv)")
    file: str = opt("scalars.csv", "its name inside the run folder")


@dataclass(frozen=True)
class LoggerOptions(Options):
    """`logger`: the trackers a run is sent to when it ends (docs/tracking.md)."""

    mlflow: MlflowOptions = field(default_factory=MlflowOptions, metadata={"help": "MLflow"})
    tensorboard: TensorboardOptions = field(
        default_factory=TensorboardOptions, metadata={"help": "TensorBoard"}
    )
    csv: CsvOptions = field(default_factory=CsvOptions, metadata={"help": "a CSV of scalars"})

    @property
    def enabled(self) -> list[str]:
        """The trackers on, in a fixed order."""
        return [name for name in ("mlflow", "tensorboard", "csv") if getattr(self, name).enabled]

    def check(self, where: str) -> None:
        for name in self.enabled:
            if name in PACKAGES and not installed(PACKAGES[name][0]):
                package, extra = PACKAGES[name]
                raise UserError(f"logger={name} needs the {package} package, which is not "
                                f'installed: pip install -e ".[{extra}]"')  # fmt: skip
        if self.tensorboard.enabled and not self.tensorboard.dir.strip():
            raise UserError(f"{where}.tensorboard.dir is empty")
        if self.csv.enabled and not self.csv.file.strip():
            raise UserError(f"{where}.csv.file is empty")


def installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None
