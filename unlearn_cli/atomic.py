"""Atomic file writes: write a temp file beside the target, then rename it into place.

A reader never sees a half-written file, and an interrupted write leaves the old file intact.
Files and folders get the permissions the user's umask allows (0644 / 0755 under umask 022), not
the 0600 / 0700 of `tempfile`, so a cache shared by a team can be read by all of it. A write that
fails (disk full, no permission) raises `WriteFailed`: one line naming what was being written,
where, and about how much room it needed.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from unlearn_cli.errors import WriteFailed


@contextmanager
def atomic_path(
    target: Path | str, what: str = "a file", size: int | None = None
) -> Iterator[Path]:
    """Yield a temp path in the target's folder; on success rename it onto the target.

    `what` names the file in an error ("the run's metrics"), `size` is the bytes it needs.
    """
    target = Path(target)
    tmp_path: Path | None = None
    try:
        make_folder(target.parent, what)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        # mkstemp makes 0600 (and some writers, safetensors', recreate the file): give the
        # permissions the umask allows once it is written
        os.chmod(tmp_path, 0o666 & ~umask())
        os.replace(tmp_path, target)
    except Exception as exc:
        error = as_os_error(exc)  # safetensors and torch.save report a full disk in their own types
        if error is None:
            raise
        partial = tmp_path.stat().st_size if tmp_path is not None and tmp_path.exists() else 0
        raise write_failed(error, target, what, size, freed=partial) from exc
    finally:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)


def make_folder(folder: Path | str, what: str = "a folder") -> Path:
    """mkdir -p under the umask; a failure is a `WriteFailed` line."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_failed(exc, folder, what) from exc
    return folder


def temp_folder(parent: Path | str, prefix: str, what: str) -> Path:
    """A new empty folder in `parent` to build something in before renaming it into place,
    with the umask's permissions (mkdtemp makes 0700: unreadable to a team sharing the cache)."""
    parent = make_folder(parent, what)
    try:
        folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        os.chmod(folder, 0o777 & ~umask())
    except OSError as exc:
        raise write_failed(exc, parent, what) from exc
    return folder


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# How libraries that wrap the OS error in their own exception (safetensors' SafetensorError,
# torch.save's RuntimeError) spell the errors a write meets most.
OS_ERROR_MARKERS = {
    errno.ENOSPC: ("No space left on device", "os error 28", "code: 28"),
    errno.EDQUOT: ("Disk quota exceeded", "os error 122", "code: 122"),
    errno.EACCES: ("Permission denied", "os error 13", "code: 13"),
}


def as_os_error(exc: BaseException) -> OSError | None:
    """The OS error behind `exc`, or None when it is not one."""
    if isinstance(exc, WriteFailed):
        return None
    if isinstance(exc, OSError):
        return exc
    text = str(exc)
    for code, markers in OS_ERROR_MARKERS.items():
        if any(marker in text for marker in markers):
            return OSError(code, os.strerror(code))
    return None


def write_failed(
    exc: OSError, path: Path, what: str, size: int | None = None, freed: int = 0
) -> WriteFailed:
    """One line for a failed write: what, where, why, and the room it needs against what is free
    (`freed`: the bytes of the partial file about to be removed, which count as free)."""
    reason = exc.strerror or type(exc).__name__
    room = ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        free = free_bytes(path)
        free = None if free is None else free + freed
        need = f"about {human_bytes(size)} needed" if size else ""
        have = f"{human_bytes(free)} free" if free is not None else ""
        room = " (" + ", ".join(p for p in (need, have) if p) + ")" if need or have else ""
    return WriteFailed(f"cannot write {what} to {path}: {reason}{room}")


def free_bytes(path: Path) -> int | None:
    for folder in (path, *path.parents):
        if folder.exists():
            try:
                return shutil.disk_usage(folder).free
            except OSError:
                return None
    return None


def human_bytes(n: int | float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # unreachable: GB is the last unit


def json_safe(value: Any) -> Any:
    """NaN and infinities are not JSON: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def atomic_write(
    target: Path | str,
    write: Callable[[Path], None],
    what: str = "a file",
    size: int | None = None,
) -> None:
    with atomic_path(target, what, size) as tmp:
        write(tmp)


def atomic_write_text(target: Path | str, text: str, what: str = "a file") -> None:
    data = text.encode("utf-8")
    atomic_write(target, lambda tmp: tmp.write_bytes(data), what, len(data))


def atomic_write_json(target: Path | str, data: Any, what: str = "a file") -> None:
    text = json.dumps(json_safe(data), indent=2, allow_nan=False, default=str) + "\n"
    atomic_write_text(target, text, what)


def atomic_write_bytes(target: Path | str, data: bytes, what: str = "a file") -> None:
    """Bytes serialised in memory first (torch.save, safetensors): a full disk then surfaces as
    Python's own OSError, not as the library's "iostream error" or "unexpected pos" message."""
    atomic_write(target, lambda tmp: tmp.write_bytes(data), what, len(data))


def torch_save_bytes(obj: Any) -> bytes:
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def atomic_write_npz(target: Path | str, what: str = "a file", **arrays: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object stops numpy from appending ".npz"
            np.savez(fh, **arrays)

    atomic_write(target, write, what, sum(a.nbytes for a in arrays.values()))
