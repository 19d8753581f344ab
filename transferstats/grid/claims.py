"""Claim files: two workers never run the same unit at once, even on different hosts.

A claim is created with ``O_CREAT | O_EXCL`` (atomic on local and NFS filesystems), holds who
claimed it, and is touched by a heartbeat thread while its holder lives. A claim is stale, and may
be taken over, when its holder is a dead process on this host, when it belongs to this very Slurm
job (a requeued job resuming its own work), or when its heartbeat stopped ``stale_after`` seconds
ago (a holder on another host that died).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

import psutil

HEARTBEAT_SECONDS = 30.0
STALE_AFTER_SECONDS = 300.0
# A breaker killed between taking and dropping the break lock must not block others forever.
_BREAK_LOCK_STALE_SECONDS = 60.0


def slurm_job_id() -> str | None:
    """This process's Slurm job (array task) id, stable across requeues; ``None`` outside Slurm."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job:
        return f"{array_job}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    return os.environ.get("SLURM_JOB_ID")


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` on this host is running (psutil: ``os.kill(pid, 0)`` would
    terminate the process on Windows)."""
    try:
        # A killed worker whose parent died too may linger as a zombie where nothing reaps
        # orphans (a container's init); it holds nothing.
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:  # ZombieProcess too, where a zombie cannot be queried
        return False
    except psutil.AccessDenied:
        return True


def read_claim(path: Path) -> tuple[dict | None, float] | None:
    """The claim's holder (``None`` while it is being written) and mtime; ``None`` if no claim."""
    try:
        mtime = path.stat().st_mtime
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(text)
    except ValueError:
        holder = None
    return (holder if isinstance(holder, dict) else None), mtime


def is_stale(holder: dict | None, mtime: float, *, stale_after: float = STALE_AFTER_SECONDS) -> bool:
    if time.time() - mtime > stale_after:
        return True
    if holder is None:
        return False
    own_job = slurm_job_id()
    if own_job is not None and holder.get("slurm_job") == own_job:
        return True
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        return not _pid_alive(holder["pid"])
    return False


def live_holder(path: Path, *, stale_after: float = STALE_AFTER_SECONDS) -> dict | None:
    """Who holds this claim now, or ``None`` when it is free or stale."""
    claim = read_claim(path)
    if claim is None:
        return None
    holder, mtime = claim
    if is_stale(holder, mtime, stale_after=stale_after):
        return None
    return holder or {}


class Claim:
    """A held claim; keeps its heartbeat going until :meth:`release`."""

    def __init__(self, path: Path, token: str, heartbeat: float):
        self.path, self.token = path, token
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat,), daemon=True)
        self._thread.start()

    def _beat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        claim = read_claim(self.path)
        # Only remove our own claim: a claim broken as stale may have been re-taken by another.
        if claim is not None and claim[0] is not None and claim[0].get("token") == self.token:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _create(path: Path, heartbeat: float) -> Claim | None:
    token = uuid.uuid4().hex
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job": slurm_job_id(),
              "token": token, "claimed_at": datetime.now(UTC).isoformat(timespec="seconds")}
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(holder, handle)
        handle.flush()
        os.fsync(handle.fileno())
    return Claim(path, token, heartbeat)


def _break_stale(path: Path, observed: dict | None, stale_after: float) -> None:
    """Remove a stale claim, but only the one judged stale: under a break lock, so that of two
    workers breaking it at once the second cannot remove the fresh claim the first just made."""
    lock = path.with_name(path.name + ".break")
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        try:
            if time.time() - lock.stat().st_mtime > _BREAK_LOCK_STALE_SECONDS:
                lock.unlink(missing_ok=True)
        except FileNotFoundError:
            pass
        return
    os.close(fd)
    try:
        current = read_claim(path)
        if current is None:
            return
        holder, mtime = current
        same = (holder or {}).get("token") == (observed or {}).get("token")
        if same and is_stale(holder, mtime, stale_after=stale_after):
            path.unlink(missing_ok=True)
    finally:
        lock.unlink(missing_ok=True)


def try_claim(path: str | Path, *, heartbeat: float = HEARTBEAT_SECONDS,
              stale_after: float = STALE_AFTER_SECONDS) -> Claim | None:
    """Claim ``path`` for this process, taking over a stale claim; ``None`` if a live worker
    holds it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        claim = _create(path, heartbeat)
        if claim is not None:
            return claim
        current = read_claim(path)
        if current is None:
            continue
        holder, mtime = current
        if not is_stale(holder, mtime, stale_after=stale_after):
            return None
        _break_stale(path, holder, stale_after)
    return _create(path, heartbeat)
