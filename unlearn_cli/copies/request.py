"""What a run does about copies of its request (`request.copies`), before any unlearning.

`CopyCheck` runs the scans in two phases: the ones that need no model (exact, phash, rows)
before the original is trained or loaded, then the feature scan and, for class requests, the
confident hidden members once the original exists, before anything is retrained or unlearned.

- Samples requests: copies of a forget sample among the retain samples (and the validation
  split, reported only: no model trains on it). `extend` adds the retain copies to the forget
  set, so the oracle leaves them out too; `refuse` stops the run (exit 2) naming their count.
- Class requests: the whole class is forgotten, so its copies in the retain set carry other
  labels: they are **hidden members**, as are retain samples the original assigns to the class
  with at least `hidden_confidence`. They are reported, never forgotten automatically (a label
  may be right), and never refuse a request.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from unlearn_cli.atomic import atomic_write_text
from unlearn_cli.copies.options import RequestOptions
from unlearn_cli.copies.scan import Detectors
from unlearn_cli.data.split import ForgetSplit
from unlearn_cli.errors import RequestRefused, UserError
from unlearn_cli.inference import predict_logits

log = logging.getLogger(__name__)

MODEL_FREE = ("exact", "pixels", "phash", "rows")
CSV_NAME = "copies.csv"


def planned_scans(opts: RequestOptions, split: ForgetSplit, model: nn.Module) -> tuple[str, ...]:
    """The scans a run will make, checked against the data and the model before any work."""
    from unlearn_cli.evaluation.representation import feature_extractor

    is_image = split.data.pixel_max is not None
    try:
        feature_extractor(model)
        has_features = True
    except ValueError:
        has_features = False
    scans = opts.scans_for(is_image, has_features)
    if "phash" in scans and not is_image:
        raise UserError(f"request.scan: phash hashes images; {split.data.name} is a table "
                        "(use rows)")  # fmt: skip
    if "pixels" in scans and not is_image:
        raise UserError(f"request.scan: pixels compares images; {split.data.name} is a table "
                        "(use rows)")  # fmt: skip
    if "rows" in scans and is_image:
        raise UserError(f"request.scan: rows compares table rows; {split.data.name} holds "
                        "images (use phash)")  # fmt: skip
    if "features" in scans and not has_features:
        name = type(model).__name__
        raise UserError(f"request.scan: features needs penultimate features; {name} has no "
                        "linear head to take them before")  # fmt: skip
    return scans


class CopyCheck:
    """The copy scan of one run's request, its verdict and its records."""

    def __init__(self, opts: RequestOptions, split: ForgetSplit, scans: tuple[str, ...],
                 run_dir: Path, batch_size: int) -> None:  # fmt: skip
        self.opts, self.split, self.scans, self.run_dir = opts, split, scans, Path(run_dir)
        self.batch_size = batch_size
        self.detectors = Detectors(split.data, scans, opts.phash_distance,
                                   opts.feature_similarity, opts.row_distance,
                                   opts.pixel_similarity)  # fmt: skip
        self.csv_name = CSV_NAME  # as the run folder names it (a stream's step: copies/step-<k>/)
        self.pairs = pd.DataFrame()
        self.seconds = 0.0
        self.extended_by = 0

    @property
    def index(self) -> np.ndarray:
        """Where copies are looked for: the retain set and the validation split."""
        return np.concatenate([self.split.retain_idx, self.split.validation_idx])

    def before_model(self) -> None:
        """The scans that need no model; refuses here already when asked to and it can."""
        self._scan(tuple(s for s in self.scans if s in MODEL_FREE))
        self._refuse_if_asked()

    def with_original(self, original: nn.Module, device: torch.device) -> ForgetSplit:
        """The feature scan and the hidden members the original shows; then the verdict: the
        split to go on with (extended by the copies, with `extend`)."""
        if "features" in self.scans:
            from unlearn_cli.evaluation.representation import penultimate_features

            self.detectors.features = lambda x: penultimate_features(  # noqa: E731
                original, x, device, self.batch_size
            )
            self._scan(("features",))
        if self.split.targets == "class":
            start = time.perf_counter()
            self._add_confident(original, device)
            self.seconds += time.perf_counter() - start
        self.write_csv()
        self._refuse_if_asked()
        if self.opts.copies == "extend":
            return self.extended()
        return self.split

    def _scan(self, scans: tuple[str, ...]) -> None:
        if not scans:
            return
        start = time.perf_counter()
        found = self.detectors.pairs(self.split.forget_idx, self.index, scans)
        self.seconds += time.perf_counter() - start
        found = found.assign(set=np.where(np.isin(found["copy_row"], self.split.retain_idx),
                                          "retain", "validation"),
                             hidden=self.split.targets == "class")  # fmt: skip
        self.pairs = merge_found(self.pairs, found)

    def _add_confident(self, original: nn.Module, device: torch.device) -> None:
        """Retain and validation samples of other labels that the original assigns to a
        forgotten class with at least `hidden_confidence`."""
        rows = self.index
        x, y = self.split.data.x_train[torch.as_tensor(rows)], self.split.data.y_train[rows]
        probs = predict_logits(original, x, device, self.batch_size).softmax(dim=1)
        classes = torch.as_tensor(self.split.forget_classes)
        best, which = probs[:, classes].max(dim=1)
        hit = (best >= self.opts.hidden_confidence) & ~torch.isin(y, classes)
        hits = hit.nonzero().flatten().numpy()
        confident = pd.DataFrame({"forget_row": -1, "copy_row": rows[hits], "kind": "confident",
                                  "distance": (1 - best[hits]).double().numpy(),
                                  "mirrored": False, "matched_by": "confident",
                                  "set": np.where(np.isin(rows[hits], self.split.retain_idx),
                                                  "retain", "validation"),
                                  "hidden": True})  # fmt: skip
        confident["forget_class"] = [self.split.data.classes[int(c)]
                                     for c in classes[which[hits]]]  # fmt: skip
        self.pairs = merge_found(self.pairs, confident)

    def request_copies(self) -> np.ndarray:
        """Retain rows that are copies of the request (not hidden members): what `extend`
        forgets and `refuse` refuses for."""
        if self.pairs.empty:
            return np.empty(0, dtype=np.int64)
        own = self.pairs[(self.pairs["set"] == "retain") & ~self.pairs["hidden"].astype(bool)]
        return np.unique(own["copy_row"].to_numpy(dtype=np.int64))

    def hidden_members(self) -> np.ndarray:
        if self.pairs.empty:
            return np.empty(0, dtype=np.int64)
        hidden = self.pairs[(self.pairs["set"] == "retain") & self.pairs["hidden"].astype(bool)]
        return np.unique(hidden["copy_row"].to_numpy(dtype=np.int64))

    def _refuse_if_asked(self) -> None:
        copies = self.request_copies()
        if self.opts.copies != "refuse" or not len(copies):
            return
        path = self.write_csv()
        raise RequestRefused(f"request.copies=refuse: {len(copies)} retain samples are copies of "
                        f"the request ({self.kind_counts_text()}); read {path}, then run "
                        "with request.copies=extend to forget them too")  # fmt: skip

    def extended(self) -> ForgetSplit:
        """The split with the request's retain copies moved to the forget set."""
        copies = self.request_copies()
        self.extended_by = int(len(copies))
        if not len(copies):
            return self.split
        log.info("request.copies=extend: the request grows by %d copies (%s)", len(copies),
                 self.kind_counts_text())  # fmt: skip
        return dataclasses.replace(
            self.split,
            forget_idx=np.union1d(self.split.forget_idx, copies),
            retain_idx=np.setdiff1d(self.split.retain_idx, copies),
        )

    def kind_counts(self, hidden: bool = False) -> dict[str, int]:
        if self.pairs.empty:
            return {}
        part = self.pairs[(self.pairs["set"] == "retain")
                          & (self.pairs["hidden"].astype(bool) == hidden)]  # fmt: skip
        return {k: int(v) for k, v in part.drop_duplicates("copy_row")["kind"].value_counts()
                .items()}  # fmt: skip

    def kind_counts_text(self) -> str:
        return ", ".join(f"{n} {k}" for k, n in self.kind_counts().items()) or "none"

    def write_csv(self) -> Path:
        """copies.csv: forget id, copy id, kind, distance, where the copy is, whether it is a
        hidden member (atomically; at most `max_pairs` rows, closest first)."""
        path = self.run_dir / CSV_NAME
        ids = self.split.data.ids()
        pairs = self.pairs if not self.pairs.empty else pd.DataFrame(
            columns=["forget_row", "copy_row", "kind", "distance", "mirrored", "matched_by",
                     "set", "hidden"])  # fmt: skip
        shown = pairs.sort_values(["hidden", "distance"]).head(self.opts.max_pairs)
        table = pd.DataFrame({
            "forget_id": [ids[int(r)] if r >= 0 else "" for r in shown["forget_row"]],
            "copy_id": [ids[int(r)] for r in shown["copy_row"]],
            "kind": shown["kind"], "distance": shown["distance"], "set": shown["set"],
            "hidden_member": shown["hidden"], "mirrored": shown["mirrored"],
            "matched_by": shown["matched_by"],
        })  # fmt: skip
        atomic_write_text(path, table.to_csv(index=False), "the copies table")
        return path

    def write_plot(self, folder: Path, most: int = 12) -> Path | None:
        """plots/copies.png: the closest pairs, request sample above its copy (images only)."""
        from unlearn_cli.copies.scan import raw_pixels
        from unlearn_cli.evaluation.plots import copy_pairs_plot

        if self.pairs.empty or self.split.data.pixel_max is None:
            return None
        pairs = self.pairs[self.pairs["forget_row"] >= 0].sort_values("distance").head(most)
        if pairs.empty:
            return None
        data = self.split.data
        titles = [f"{k}{' mirror' if m else ''}{' hidden' if h else ''}\n{d:.3g}" for k, m, h, d in
                  zip(pairs["kind"], pairs["mirrored"], pairs["hidden"], pairs["distance"],
                      strict=True)]  # fmt: skip
        return copy_pairs_plot(raw_pixels(data, pairs["forget_row"].to_numpy(np.int64)),
                               raw_pixels(data, pairs["copy_row"].to_numpy(np.int64)), titles,
                               folder / "copies.png")  # fmt: skip

    def summary(self) -> dict:
        """metrics.json's `copies`: what was scanned, what was found, what was done."""
        return {
            "mode": self.opts.copies,
            "scans": list(self.scans),
            "thresholds": {"phash_distance": self.opts.phash_distance,
                           "pixel_similarity": self.opts.pixel_similarity,
                           "feature_similarity": self.opts.feature_similarity,
                           "row_distance": self.opts.row_distance,
                           "hidden_confidence": self.opts.hidden_confidence},  # fmt: skip
            "num_request_copies": int(len(self.request_copies())),
            "request_copies_by_kind": self.kind_counts(),
            "num_hidden_members": int(len(self.hidden_members())),
            "hidden_members_by_kind": self.kind_counts(hidden=True),
            "num_validation_copies": int(self.pairs["set"].eq("validation").sum())
            if not self.pairs.empty else 0,
            "num_pairs": int(len(self.pairs)),
            "extended_by": self.extended_by,
            "seconds": self.seconds,
            "seconds_by_scan": dict(self.detectors.seconds),
            "csv": self.csv_name,
        }  # fmt: skip

    def caption(self) -> str:
        """The run table's line about copies."""
        n, hidden = len(self.request_copies()), len(self.hidden_members())
        if self.opts.copies == "extend" and self.extended_by:
            text = f"the request was extended by {self.extended_by} copies of it"
        elif self.split.targets == "samples":
            text = f"{n} copies of the request remain in the retain set" if n else \
                "no copies of the request found in the retain set"  # fmt: skip
        else:
            text = ""
        if hidden:
            text += ("; " if text else "") + f"{hidden} hidden members of the forgotten class " \
                "remain under other labels"  # fmt: skip
        return f"Copies: {text} ({self.csv_name})." if text else ""


def merge_found(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """The pairs of two scans, one row per pair: the first scan's row, with every kind that
    found the pair in `matched_by`."""
    if old.empty:
        return new.reset_index(drop=True)
    if new.empty:
        return old
    both = pd.concat([old, new], ignore_index=True)
    kinds = both.groupby(["forget_row", "copy_row"], sort=False)["matched_by"].agg(
        lambda k: ";".join(dict.fromkeys(";".join(k).split(";")))
    )
    first = both.drop_duplicates(["forget_row", "copy_row"], keep="first")
    first = first.set_index(["forget_row", "copy_row"])
    first["matched_by"] = kinds
    return first.reset_index()
