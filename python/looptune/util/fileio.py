"""Atomic writes and bounded reads for every file looptune writes or reads.

``atomic_write_text`` / ``atomic_write_bytes`` write to a temporary file in the target's
directory, fsync it, and ``os.replace`` it over the target, so a concurrent reader sees either
the old file or the complete new one, never an empty or partial file. ``read_text_bounded``
refuses anything that is not a regular file (a FIFO would block, a device may never end) and any
file larger than a stated limit, before reading a byte.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

MAX_SCHEDULE_BYTES = 1 << 20  # 1 MiB: a schedule is a few hundred bytes


class FileTooLargeError(ValueError):
    """A file is larger than the limit for its kind."""


class NotRegularFileError(ValueError):
    """A path names a FIFO, a device, a socket or a directory, not a regular file."""


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kw: object) -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success fsync it and rename it over ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        os.fchmod(fd, _new_file_mode(path))  # mkstemp makes 0600; keep the usual permissions
        with os.fdopen(fd, mode, **kw) as f:  # type: ignore[call-overload]
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dfd = os.open(path.parent or ".", os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _new_file_mode(path: Path) -> int:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically (temp file in the same directory, fsync, rename)."""
    with atomic_open(path, "w", encoding=encoding) as f:
        f.write(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same directory, fsync, rename)."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def read_bytes_bounded(path: str | Path, limit: int) -> bytes:
    """The bytes of the regular file ``path``, refused if it is larger than ``limit`` bytes.

    Raises:
        FileNotFoundError: nothing at ``path``.
        NotRegularFileError: ``path`` is a FIFO, device, socket or directory (checked without
            opening it for reading, so a FIFO never blocks).
        FileTooLargeError: the file has more than ``limit`` bytes.
    """
    path = Path(path)
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise NotRegularFileError(f"{path} is not a regular file (a FIFO, device or directory)")
    if st.st_size > limit:
        raise FileTooLargeError(f"{path} has {st.st_size} bytes, more than the limit of {limit}")
    # O_NONBLOCK: if the path was swapped for a FIFO after the stat, open does not block.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise NotRegularFileError(f"{path} is not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise FileTooLargeError(f"{path} has more than the limit of {limit} bytes")
    return data


def read_text_bounded(path: str | Path, limit: int, encoding: str = "utf-8") -> str:
    """``read_bytes_bounded`` decoded; a decoding error becomes a ``ValueError`` naming the file."""
    data = read_bytes_bounded(path, limit)
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not {encoding} text: {exc}") from None


__all__ = [
    "MAX_SCHEDULE_BYTES",
    "FileTooLargeError",
    "NotRegularFileError",
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_text",
    "read_bytes_bounded",
    "read_text_bounded",
]
