"""One worker process per heartbeat file.

The heartbeat file tells the health check that a worker loop is alive. Two workers touching one file
(replicas on one host with the default ``WORKER_HEARTBEAT_FILE``, or sharing ``/tmp``) would keep it
fresh while either lives, hiding a dead one. So ``run`` holds an exclusive ``flock`` on
``<heartbeat file>.lock`` for its lifetime, and refuses to start while another process holds it. The
kernel drops the lock when its holder exits, however it exits: a crashed worker leaves no stale lock.

The lock is a separate file so that taking it does not touch the heartbeat itself: the heartbeat
stays stale until the worker loop runs (it is not healthy while it waits for its deployment).
"""

from __future__ import annotations

import contextlib
import fcntl
import os

from worker.errors import ConfigError


class HeartbeatInUseError(ConfigError):
    """Another live worker process holds the heartbeat file (start-up error, exit code 2)."""


class HeartbeatLock:
    """An exclusive claim on a heartbeat file, held until :meth:`release` or the end of the process.

    Attributes:
        path: The heartbeat file claimed.
        lock_path: The file the lock is held on (``path`` + ``.lock``; it holds the holder's pid).
    """

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self.lock_path = lock_path_of(path)
        self._fd: int | None = fd

    def release(self) -> None:
        """Drop the lock (closing the file releases it); idempotent."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class HeartbeatPathError(ConfigError):
    """The heartbeat file names a directory (start-up and health-check error, exit code 2)."""


def check_heartbeat_path(path: str) -> None:
    """Refuse a heartbeat file that is an existing directory (``WORKER_HEARTBEAT_FILE=/tmp``).

    Touching a directory succeeds (it changes its modification time), so the worker would run without
    a warning, lock ``<dir>.lock`` beside it, and the health check would read the directory's age,
    which anything writing to it keeps fresh: a dead worker would pass.

    Raises:
        HeartbeatPathError: ``path`` is a directory (or a link to one); the message suggests a file in it.
    """
    if os.path.isdir(path):
        example = os.path.join(path, "watch-worker.heartbeat")
        raise HeartbeatPathError(f"WORKER_HEARTBEAT_FILE {path} is a directory: it must name a file (e.g. {example})")


def lock_path_of(path: str) -> str:
    """Return the lock file of the heartbeat file ``path``."""
    return f"{path}.lock"


def claim_heartbeat_file(path: str | None) -> HeartbeatLock | None:
    """Take the heartbeat file ``path`` for this process, or refuse it when another worker holds it.

    Args:
        path: ``settings.heartbeat_file``; None or "" (no heartbeat) claims nothing.

    Returns:
        The lock, to hold while the worker runs; None when there is no heartbeat file, or when the lock
        file cannot be created or opened (an unwritable directory: the worker then warns that the
        heartbeat cannot be written, as before locks existed).

    Raises:
        HeartbeatInUseError: another live process holds the lock; the message names its pid and says
            to give each replica its own ``WORKER_HEARTBEAT_FILE``.
        HeartbeatPathError: ``path`` is a directory (:func:`check_heartbeat_path`), or its directory
            does not exist (the heartbeat could never be written, nor the lock taken, and the health
            check would fail forever).
    """
    if not path:
        return None
    check_heartbeat_path(path)
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise HeartbeatPathError(
            f"WORKER_HEARTBEAT_FILE {path}: its directory {parent} does not exist; create it or name a file"
            " in an existing directory (e.g. /tmp/watch-worker.heartbeat)"
        )
    lock_path = lock_path_of(path)
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except PermissionError:  # left by another user: locking needs read access only
        try:
            fd = os.open(lock_path, os.O_RDONLY)
        except OSError:
            return None
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_pid(fd)
        os.close(fd)
        by = f"another worker (pid {holder})" if holder else "another worker"
        raise HeartbeatInUseError(
            f"{by} is using the heartbeat file {path}: each worker on a host needs its own;"
            " set WORKER_HEARTBEAT_FILE (e.g. /tmp/watch-worker-2.heartbeat) and point its health check"
            " at the same file"
        ) from None
    with contextlib.suppress(OSError):  # a read-only lock file keeps the former pid: only the message suffers
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return HeartbeatLock(path, fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
