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
  of that), near when at least `request.pixel_similarity`; a pair that comes close but not
  there is compared again as stored, the inner window of one against the other's at every
  offset up to 2 pixels (a shift that moved content across the border fools the centring);
- **rows** (tables): standardised rows within `request.row_distance` (Euclidean over
  sqrt(features)).

Images are also looked up as their horizontal mirror (pHash and CNN features are not
mirror-invariant, and a mirrored photo is the same photo). Neighbour queries go through
scikit-learn's `NearestNeighbors` (brute force in chunks: fast at these sizes; a cosine ball
tree would not be faster in a few hundred dimensions); pHash's Hamming ball is a chunked XOR and
popcount of the packed 64-bit hashes.
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
CANDIDATE_SIMILARITY = 0.80  # the pixel scan checks the 9 placements of pairs above this
# Pairs whose best placement lands between this and the threshold get the window check: a shift
# whose uncovered border held content moves the centre of mass, so centring misaligns it.
WINDOW_CHECK_FROM = 0.90
SHIFT_MARGIN = 2  # the window check finds shifts up to this many pixels
# scipy.fftpack.dct's unnormalised DCT-II, y[k] = 2 sum_n x[n] cos(pi k (2n + 1) / 2N), N = 32:
# its 8 lowest frequencies as a matrix, so the hash costs two small products per image.
DCT_LOW_8x32 = 2 * np.cos(np.pi * np.arange(8)[:, None] * (2 * np.arange(32)[None, :] + 1) / 64)
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
    from PIL import Image

    def small(image: np.ndarray) -> np.ndarray:
        pil = Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))
        return np.asarray(pil.convert("L").resize((32, 32), Image.Resampling.LANCZOS))

    if not len(images):
        return np.empty((0, 64), dtype=bool)
    pixels = np.stack([small(image) for image in images]).astype(np.float64)
    low = DCT_LOW_8x32  # the 8 lowest rows of scipy's DCT-II: only they enter the hash
    flat = (low @ pixels @ low.T).reshape(len(pixels), 64)
    return flat > np.median(flat, axis=1, keepdims=True)


def mirror(images: np.ndarray) -> np.ndarray:
    return images[..., ::-1].copy()


def greyscale(images: np.ndarray) -> np.ndarray:
    """uint8 images (n, C, H, W) as float32 greyscale (n, H, W)."""
    return images.astype(np.float32).mean(axis=1)


def centred_on_mass(grey: np.ndarray) -> np.ndarray:
    """Greyscale images (n, H, W), each rolled so that its centre of mass is the image's centre
    (to the nearest pixel)."""
    n, height, width = grey.shape
    mass = grey.sum(axis=(1, 2)).clip(1e-9)
    ys = (grey.sum(axis=2) * np.arange(height)).sum(axis=1) / mass
    xs = (grey.sum(axis=1) * np.arange(width)).sum(axis=1) / mass
    dy = np.round((height - 1) / 2 - ys).astype(int)
    dx = np.round((width - 1) / 2 - xs).astype(int)
    # np.roll per image, as one gather: out[i, y, x] = grey[i, (y - dy_i) % H, (x - dx_i) % W]
    ys = (np.arange(height)[None, :, None] - dy[:, None, None]) % height
    xs = (np.arange(width)[None, None, :] - dx[:, None, None]) % width
    return grey[np.arange(n)[:, None, None], ys, xs]


def unit_centred(images: np.ndarray) -> np.ndarray:
    """Each image as a vector with mean 0 and norm 1 (so a dot product is a correlation)."""
    flat = images.reshape(len(images), int(np.prod(images.shape[1:])))
    flat = flat - flat.mean(axis=1, keepdims=True)
    return flat / np.linalg.norm(flat, axis=1, keepdims=True).clip(1e-9)


def pair_dots(a: np.ndarray, b: np.ndarray, qa: np.ndarray, pb: np.ndarray,
              chunk: int = 8192) -> np.ndarray:  # fmt: skip
    """Row-wise dot products a[qa[i]] . b[pb[i]], in chunks (the gathered rows stay small)."""
    out = np.empty(len(qa), dtype=np.float64)
    for i in range(0, len(qa), chunk):
        out[i : i + chunk] = np.einsum("ij,ij->i", a[qa[i : i + chunk]], b[pb[i : i + chunk]])
    return out


def best_placement(queries: np.ndarray, flat_points: np.ndarray, q: np.ndarray,
                   p: np.ndarray) -> np.ndarray:  # fmt: skip
    """For pairs (queries[q], flat_points[p]): the best correlation over the 9 placements of
    the query (centred images, (n, H, W)) within one pixel; `flat_points` are `unit_centred`."""
    best = np.full(len(q), -1.0)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            moved = unit_centred(np.roll(queries, (dy, dx), axis=(1, 2)))
            best = np.maximum(best, pair_dots(moved, flat_points, q, p))
    return best


def window_similarity(queries: np.ndarray, points: np.ndarray, q: np.ndarray, p: np.ndarray,
                      margin: int = SHIFT_MARGIN) -> np.ndarray:  # fmt: skip
    """For pairs (queries[q], points[p]) of greyscale images as stored (not centred): the best
    correlation of the query's inner window (the image less `margin` pixels each side) with
    the point's window at each offset within `margin`. A copy shifted by up to `margin`
    pixels matches at its offset whatever its uncovered border holds (a repeated edge, black,
    or content wrapped round): the window never reaches that border."""
    height, width = queries.shape[1:]
    inner = (slice(None), slice(margin, height - margin), slice(margin, width - margin))
    window, others = unit_centred(queries[q][inner]), points[p]
    best = np.full(len(q), -1.0)
    for dy in range(-margin, margin + 1):
        for dx in range(-margin, margin + 1):
            moved = others[:, margin + dy : height - margin + dy,
                           margin + dx : width - margin + dx]  # fmt: skip
            best = np.maximum(best, np.einsum("ij,ij->i", window, unit_centred(moved)))
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
                 metric: str, query: np.ndarray, index: np.ndarray) -> Found:  # fmt: skip
    """Every (query, point) pair within `radius` by `metric` (scikit-learn, brute force)."""
    from sklearn.neighbors import NearestNeighbors

    if not len(queries) or not len(points):
        return Found(kind, np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0))
    search = NearestNeighbors(metric=metric, algorithm="brute").fit(points)
    distances, neighbours = search.radius_neighbors(queries, radius=radius)
    counts = np.array([len(n) for n in neighbours])
    q = np.repeat(query, counts)
    m = index[np.concatenate(neighbours).astype(np.int64)] if counts.sum() else np.empty(0, int)
    d = np.concatenate(distances) if counts.sum() else np.empty(0)
    return Found(kind, q.astype(np.int64), np.asarray(m, dtype=np.int64), d)


def packed(bits: np.ndarray) -> np.ndarray:
    """(n, 64) booleans as n 64-bit words."""
    return np.packbits(bits, axis=1).view(np.uint64).ravel()


def hamming_pairs(queries: np.ndarray, points: np.ndarray, max_distance: int, query: np.ndarray,
                  index: np.ndarray, chunk: int = 256) -> Found:  # fmt: skip
    """Every (query, point) pair of 64-bit hashes at most `max_distance` bits apart: brute force
    in chunks, one XOR and popcount per pair (10x faster than scikit-learn's float Hamming)."""
    q_all, m_all, d_all = [], [], []
    for start in range(0, len(queries), chunk):
        bits = np.bitwise_count(queries[start : start + chunk, None] ^ points[None, :])
        q, m = np.nonzero(bits <= max_distance)
        q_all.append(query[start + q])
        m_all.append(index[m])
        d_all.append(bits[q, m].astype(np.float64))
    if not q_all:
        return Found("phash", np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0))
    return Found("phash", np.concatenate(q_all).astype(np.int64),
                 np.concatenate(m_all).astype(np.int64), np.concatenate(d_all))  # fmt: skip


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
    # which kinds found each pair, as flags (a cythonised groupby, not a Python call per pair)
    flags = pd.get_dummies(pairs["kind"]).groupby([pairs["forget_row"], pairs["copy_row"]],
                                                  sort=False).max()  # fmt: skip
    best = pairs.drop_duplicates(["forget_row", "copy_row"]).set_index(["forget_row", "copy_row"])
    found = [kind for kind in KINDS if kind in flags.columns]
    joined = np.full(len(flags), "", dtype=object)
    for kind in found:
        joined = joined + np.where(flags[kind].to_numpy(), kind + ";", "")
    best["matched_by"] = pd.Series(joined, index=flags.index).str.rstrip(";")
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
        points = packed(phash_bits(raw_pixels(self.data, index)))

        def scan(images: np.ndarray) -> Found:
            return hamming_pairs(packed(phash_bits(images)), points, self.phash_distance, query,
                                 index)  # fmt: skip

        images = raw_pixels(self.data, query)
        return both_ways(scan, images, mirror(images))

    def _pixels(self, query: np.ndarray, index: np.ndarray) -> Found:
        points = greyscale(raw_pixels(self.data, index))
        flat_points = unit_centred(centred_on_mass(points))

        def scan(images: np.ndarray) -> Found:
            grey = greyscale(images)
            queries = centred_on_mass(grey)
            near = radius_pairs("pixels", unit_centred(queries), flat_points,
                                1 - CANDIDATE_SIMILARITY, "cosine", np.arange(len(query)),
                                np.arange(len(index)))  # fmt: skip
            similarity = best_placement(queries, flat_points, near.query, near.match)
            unsure = (similarity >= WINDOW_CHECK_FROM) & (similarity < self.pixel_similarity)
            similarity[unsure] = np.maximum(similarity[unsure], window_similarity(
                grey, points, near.query[unsure], near.match[unsure]))  # fmt: skip
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
