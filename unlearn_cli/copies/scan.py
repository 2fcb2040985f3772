"""The copy scan: which retain (and validation) samples are copies of a request's samples.

Five detectors, each an index query, never an all-pairs Python loop:

- **exact**: a hash of the decoded sample (pixels on the 0-255 scale the file stored, or a
  table row's values), so a re-encoded PNG of the same pixels is the same sample;
- **phash**: the perceptual hash of `imagehash.phash` (a DCT of the 32x32 greyscale image, 64
  bits), near when the Hamming distance is at most `request.phash_distance` (imagededup's
  default is 10; ours is 1, docs/copies.md says why); the DCT runs over all images at once,
  and tests check it against `imagehash.phash` bit for bit;
- **features**: the original model's penultimate features, near when their cosine similarity is
  at least `request.feature_similarity` (imagededup's CNN default is 0.9; ours is stricter,
  docs/copies.md says why);
- **pixels** (images): the pixels themselves, each image moved so that its centre of mass sits
  in the middle (a copy shifted by a few pixels lines up again), compared by the correlation
  of their pixels (cosine of the centred values, the best of the 9 placements within one pixel
  of that), near when at least `request.pixel_similarity`;
- **rows** (tables): standardised rows within `request.row_distance` (Euclidean over
  sqrt(features)).

Images are also looked up as their horizontal mirror (pHash and CNN features are not
mirror-invariant, and a mirrored photo is the same photo). Neighbour queries go through
scikit-learn's `NearestNeighbors` (brute force in chunks: fast at these sizes; a Hamming or
cosine ball tree would not be faster in 64 or a few hundred dimensions).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from unlearn_cli.data.dataset import ImageDataset

log = logging.getLogger(__name__)

# How strongly a pair is a copy: a pair found by several scans is listed under the first.
KINDS = ("exact", "pixels", "phash", "features", "rows")
CANDIDATE_SIMILARITY = 0.85  # the pixel scan checks the 9 placements of pairs above this
PAIR_COLUMNS = ("forget_row", "copy_row", "kind", "distance", "mirrored", "matched_by")


@dataclass
class Found:
    """Pairs (query row, index row) one scan found, with their distances."""

    kind: str
    query: np.ndarray
    match: np.ndarray
    distance: np.ndarray
    mirrored: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=bool))

    def frame(self) -> pd.DataFrame:
        mirrored = self.mirrored if len(self.mirrored) else np.zeros(len(self.query), dtype=bool)
        return pd.DataFrame({"forget_row": self.query, "copy_row": self.match, "kind": self.kind,
                             "distance": self.distance, "mirrored": mirrored})  # fmt: skip


def raw_pixels(data: ImageDataset, rows: np.ndarray, batch: int = 4096) -> np.ndarray:
    """Training images `rows` on the 0-255 scale, uint8, (n, C, H, W): undoes the dataset's
    standardisation, so two files with the same decoded pixels give the same bytes."""
    mean = torch.tensor(data.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(data.std, dtype=torch.float32).view(1, -1, 1, 1)
    scale = 255.0 / float(data.pixel_max or 255.0)
    out = []
    for i in range(0, len(rows), batch):
        x = data.x_train[torch.as_tensor(np.array(rows[i : i + batch]))].float()
        out.append(((x * std + mean) * scale).round().clamp(0, 255).to(torch.uint8).numpy())
    return np.concatenate(out) if out else np.empty((0, *data.input_shape), dtype=np.uint8)


def exact_keys(values: np.ndarray) -> np.ndarray:
    """A 16-byte digest of each row's bytes (images: uint8 pixels; tables: float32 values)."""
    flat = np.ascontiguousarray(values).reshape(len(values), -1)
    return np.array([hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in flat],
                    dtype=object)  # fmt: skip


def phash_bits(images: np.ndarray) -> np.ndarray:
    """`imagehash.phash` of each uint8 image (n, C, H, W), as (n, 64) booleans: greyscale,
    Lanczos resize to 32x32 (PIL, as imagehash does), 2-D DCT-II, the top-left 8x8, above its
    median. The DCT and median run over all images at once."""
    import scipy.fftpack
    from PIL import Image

    def small(image: np.ndarray) -> np.ndarray:
        pil = Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))
        return np.asarray(pil.convert("L").resize((32, 32), Image.Resampling.LANCZOS))

    if not len(images):
        return np.empty((0, 64), dtype=bool)
    pixels = np.stack([small(image) for image in images]).astype(np.float64)
    dct = scipy.fftpack.dct(scipy.fftpack.dct(pixels, axis=1), axis=2)[:, :8, :8]
    flat = dct.reshape(len(dct), 64)
    return flat > np.median(flat, axis=1, keepdims=True)


def mirror(images: np.ndarray) -> np.ndarray:
    return images[..., ::-1].copy()


def centred_on_mass(images: np.ndarray) -> np.ndarray:
    """uint8 images (n, C, H, W) as float greyscale (n, H, W), each rolled so that its centre
    of mass is the image's centre (to the nearest pixel)."""
    grey = images.astype(np.float64).mean(axis=1)
    n, height, width = grey.shape
    mass = grey.sum(axis=(1, 2)).clip(1e-9)
    ys = (grey.sum(axis=2) * np.arange(height)).sum(axis=1) / mass
    xs = (grey.sum(axis=1) * np.arange(width)).sum(axis=1) / mass
    dy = np.round((height - 1) / 2 - ys).astype(int)
    dx = np.round((width - 1) / 2 - xs).astype(int)
    return np.stack([np.roll(g, (y, x), axis=(0, 1)) for g, y, x in zip(grey, dy, dx, strict=True)])


def unit_centred(images: np.ndarray) -> np.ndarray:
    """Each image as a vector with mean 0 and norm 1 (so a dot product is a correlation)."""
    flat = images.reshape(len(images), -1)
    flat = flat - flat.mean(axis=1, keepdims=True)
    return flat / np.linalg.norm(flat, axis=1, keepdims=True).clip(1e-9)


def best_placement(queries: np.ndarray, flat_points: np.ndarray, q: np.ndarray,
                   p: np.ndarray) -> np.ndarray:  # fmt: skip
    """For pairs (queries[q], flat_points[p]): the best correlation over the 9 placements of
    the query (centred images, (n, H, W)) within one pixel; `flat_points` are `unit_centred`."""
    best = np.full(len(q), -1.0)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            moved = unit_centred(np.roll(queries, (dy, dx), axis=(1, 2)))
            best = np.maximum(best, (moved[q] * flat_points[p]).sum(axis=1))
    return best


def exact_pairs(query_keys: np.ndarray, index_keys: np.ndarray, query: np.ndarray,
                index: np.ndarray) -> Found:  # fmt: skip
    """Rows with the same digest (a dict lookup per row)."""
    where: dict[bytes, list[int]] = {}
    for j, key in enumerate(index_keys):
        where.setdefault(key, []).append(j)
    q, m = [], []
    for i, key in enumerate(query_keys):
        for j in where.get(key, ()):
            q.append(query[i])
            m.append(index[j])
    return Found("exact", np.asarray(q, dtype=np.int64), np.asarray(m, dtype=np.int64),
                 np.zeros(len(q)))  # fmt: skip


def radius_pairs(kind: str, queries: np.ndarray, points: np.ndarray, radius: float,
                 metric: str, query: np.ndarray, index: np.ndarray,
                 scale: float = 1.0) -> Found:  # fmt: skip
    """Every (query, point) pair within `radius` by `metric` (scikit-learn, brute force)."""
    from sklearn.neighbors import NearestNeighbors

    if not len(queries) or not len(points):
        return Found(kind, np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0))
    search = NearestNeighbors(metric=metric, algorithm="brute").fit(points)
    distances, neighbours = search.radius_neighbors(queries, radius=radius)
    counts = np.array([len(n) for n in neighbours])
    q = np.repeat(query, counts)
    m = index[np.concatenate(neighbours).astype(np.int64)] if counts.sum() else np.empty(0, int)
    d = np.concatenate(distances) * scale if counts.sum() else np.empty(0)
    return Found(kind, q.astype(np.int64), np.asarray(m, dtype=np.int64), d)


def both_ways(scan: Callable[[Any], Found], plain: Any, mirrored: Any) -> Found:
    """`scan` of the query images and of their mirrors, as one set of pairs."""
    a, b = scan(plain), scan(mirrored)
    flags = np.concatenate([np.zeros(len(a.query), bool), np.ones(len(b.query), bool)])
    return Found(a.kind, np.concatenate([a.query, b.query]), np.concatenate([a.match, b.match]),
                 np.concatenate([a.distance, b.distance]), flags)  # fmt: skip


def merge(found: list[Found]) -> pd.DataFrame:
    """One row per (forget_row, copy_row): the strongest kind that found it (exact, then
    pixels, phash, features, rows), its distance, and every kind that did (`matched_by`)."""
    frames = [f.frame() for f in found if len(f.query)]
    if not frames:
        return pd.DataFrame(columns=list(PAIR_COLUMNS))
    pairs = pd.concat(frames, ignore_index=True)
    pairs["rank"] = pairs["kind"].map(KINDS.index)
    pairs = pairs.sort_values(["forget_row", "copy_row", "rank", "distance"])
    kinds = pairs.groupby(["forget_row", "copy_row"], sort=False)["kind"].agg(
        lambda k: ";".join(dict.fromkeys(k))
    )
    best = pairs.drop_duplicates(["forget_row", "copy_row"]).set_index(["forget_row", "copy_row"])
    best["matched_by"] = kinds
    return best.reset_index()[list(PAIR_COLUMNS)]


@dataclass
class Detectors:
    """The scans of one run with their thresholds, over a dataset's training rows."""

    data: ImageDataset
    scans: tuple[str, ...]
    phash_distance: int
    feature_similarity: float
    row_distance: float
    pixel_similarity: float = 0.98
    features: Callable[[torch.Tensor], np.ndarray] | None = None  # the original's, if scanned
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def is_image(self) -> bool:
        return self.data.pixel_max is not None

    def pairs(self, query: np.ndarray, index: np.ndarray, scans: tuple[str, ...]) -> pd.DataFrame:
        """Every pair (query row, index row) that one of `scans` finds."""
        found = []
        for kind in scans:
            start = time.perf_counter()
            found.append(getattr(self, f"_{kind}")(np.asarray(query), np.asarray(index)))
            self.seconds[kind] = self.seconds.get(kind, 0.0) + time.perf_counter() - start
        return merge(found)

    def _values(self, rows: np.ndarray) -> np.ndarray:
        if self.is_image:
            return raw_pixels(self.data, rows)
        return self.data.x_train[torch.as_tensor(rows)].float().numpy()

    def _exact(self, query: np.ndarray, index: np.ndarray) -> Found:
        index_keys = exact_keys(self._values(index))

        def scan(values: np.ndarray) -> Found:
            return exact_pairs(exact_keys(values), index_keys, query, index)

        values = self._values(query)
        return both_ways(scan, values, mirror(values)) if self.is_image else scan(values)

    def _phash(self, query: np.ndarray, index: np.ndarray) -> Found:
        points = phash_bits(raw_pixels(self.data, index))
        radius = (self.phash_distance + 0.5) / 64  # hamming = the share of differing bits

        def scan(images: np.ndarray) -> Found:
            return radius_pairs("phash", phash_bits(images), points, radius, "hamming", query,
                                index, scale=64.0)  # fmt: skip

        images = raw_pixels(self.data, query)
        return both_ways(scan, images, mirror(images))

    def _pixels(self, query: np.ndarray, index: np.ndarray) -> Found:
        flat_points = unit_centred(centred_on_mass(raw_pixels(self.data, index)))

        def scan(images: np.ndarray) -> Found:
            queries = centred_on_mass(images)
            near = radius_pairs("pixels", unit_centred(queries), flat_points,
                                1 - CANDIDATE_SIMILARITY, "cosine", np.arange(len(query)),
                                np.arange(len(index)))  # fmt: skip
            similarity = best_placement(queries, flat_points, near.query, near.match)
            keep = similarity >= self.pixel_similarity
            return Found("pixels", query[near.query[keep]], index[near.match[keep]],
                         1 - similarity[keep])  # fmt: skip

        images = raw_pixels(self.data, query)
        return both_ways(scan, images, mirror(images))

    def _features(self, query: np.ndarray, index: np.ndarray) -> Found:
        assert self.features is not None, "the feature scan needs the original's features"
        x = self.data.x_train
        points = self.features(x[torch.as_tensor(index)])
        radius = 1.0 - self.feature_similarity + 1e-9

        def scan(images: torch.Tensor) -> Found:
            return radius_pairs("features", self.features(images), points, radius, "cosine",
                                query, index)  # fmt: skip

        queries = x[torch.as_tensor(query)]
        return both_ways(scan, queries, queries.flip(-1))

    def _rows(self, query: np.ndarray, index: np.ndarray) -> Found:
        x = self.data.x_train
        flat = lambda rows: x[torch.as_tensor(rows)].float().flatten(1).numpy()  # noqa: E731
        points, queries = flat(index), flat(query)
        scale = np.sqrt(points.shape[1]) if points.size else 1.0
        return radius_pairs("rows", queries / scale, points / scale, self.row_distance,
                            "euclidean", query, index)  # fmt: skip
