"""Atomic output files: written to a temporary file in the same folder, then moved over the
target with ``os.replace``, so an interrupted write (crash, Ctrl-C, full disk) never leaves a
truncated file under the output's name; and :func:`check_new_output`, the refusal to
overwrite an existing output without ``--force``."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "check_new_output", "write_bytes_atomic"]


def check_new_output(path: str | os.PathLike, force: bool = False) -> Path:
    """``path`` as a Path; raises FileExistsError when it exists and ``force`` is False, and
    IsADirectoryError when it is a folder."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"output is a folder, expected a file name: {path}")
    if path.exists() and not force:
        raise FileExistsError(f"output {path} exists; use --force to overwrite it")
    return path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block ends normally the temporary
    file (written, flushed to disk) replaces ``path``; otherwise it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """``Path(path).write_bytes(data)``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)
