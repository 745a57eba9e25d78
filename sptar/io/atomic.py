"""Atomic writes: a file or a folder appears complete under its final name, or not at all.

Every writer in the project goes through :func:`atomic_write` (files) or :func:`atomic_dir`
(folders): content goes to a temporary sibling first and is renamed into place, so a killed
process never leaves a half-written output behind under the real name.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from sptar.errors import SptarError


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once: os.umask can only be read by setting it


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success fsync it and rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    binary = "b" in mode
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding,
                       newline=None if binary else "") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual mode
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        _raise_if_disk_full(exc, path)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; on success it replaces ``path`` as a whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_if_disk_full(exc, path)
        raise


def _raise_if_disk_full(exc: BaseException, path: Path) -> None:
    """A full disk (or quota) while writing ``path`` is a one-line error, not a traceback."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        raise SptarError(f"{path}: no space left on the device while writing it; nothing was"
                         " replaced (fix: free disk space, or move the data folder with"
                         " SPTAR_DATA_DIR)") from exc


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed): one process at a time inside."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove_stale_temporaries(folder: str | Path, name: str | None = None,
                             recursive: bool = False) -> None:
    """Delete leftovers of writes that were killed half-way inside ``folder`` (and its
    subfolders if ``recursive``): the ``.*.tmp`` siblings of :func:`atomic_write` /
    :func:`atomic_dir` and the ``.*.old-<pid>`` folders :func:`atomic_dir` moves aside; with
    ``name``, only those of the output called ``name``."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    stem = "*" if name is None else glob.escape(name)
    for pattern in (f".{stem}.*.tmp", f".{stem}.old-*"):
        for leftover in sorted(folder.rglob(pattern) if recursive else folder.glob(pattern)):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
