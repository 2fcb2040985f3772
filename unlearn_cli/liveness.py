"""Whether a run is still alive: the host and process a metrics.json records, checked against
the processes running now, so a run whose process died without a word (`kill -9`, a lost node)
reads `killed` rather than `running` forever. Light on purpose: `unlearn runs` reads it for
every folder without importing torch.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any


def this_process() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": process_start(os.getpid())}


def process_start(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot, Linux), to tell it from a later
    process that got the same id; None where /proc does not say."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the name may hold spaces


def process_alive(process: dict[str, Any]) -> bool | None:
    """Whether the recorded process still runs: None when it ran on another host (unknowable)."""
    if process.get("host") != socket.gethostname():
        return None
    pid = int(process.get("pid", -1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process with that id: alive
        pass
    except (OSError, ValueError, OverflowError):
        return False
    start = process.get("start")
    return start is None or process_start(pid) in (None, start)


def run_status(data: dict[str, Any]) -> str:
    """metrics.json's status, with `killed` for a `running` run whose process is gone."""
    status = str(data.get("status", "unknown"))
    process = data.get("process")
    if status == "running" and isinstance(process, dict) and process_alive(process) is False:
        return "killed"
    return status
