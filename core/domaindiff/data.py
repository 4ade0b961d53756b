"""DomainDataModule: the base of every plugin's data, with a cache, downloads and atomic writes.

Cached data lives under ``$DOMAINDIFF_DATA/<name>`` (default ``~/.cache/domaindiff/<name>``).
Files are written to a temporary name in the same directory and renamed into place, so an
interrupted run never leaves a half-written cache entry. Downloads are checksummed; with no
network they fail with :class:`DatasetUnavailableError`, which names the URL and the manual step.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch


class DatasetUnavailableError(RuntimeError):
    """A dataset could not be obtained (no network, bad checksum, missing files)."""


def data_root() -> Path:
    """``$DOMAINDIFF_DATA`` or ``~/.cache/domaindiff``."""
    return Path(os.environ.get("DOMAINDIFF_DATA", Path.home() / ".cache" / "domaindiff"))


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file next to ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` atomically."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_write(path) as fh:
        fh.write(buf.getvalue())


def atomic_savez(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """``np.savez`` atomically (``path`` should end in ``.npz``)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    with atomic_write(path) as fh:
        fh.write(buf.getvalue())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write text atomically."""
    with atomic_write(path, "w") as fh:
        fh.write(text)


def sha256sum(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: str | os.PathLike, sha256: str | None = None,
             manual: str = "", timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest`` (skipped if present and matching), verify, write atomically.

    Raises:
        DatasetUnavailableError: offline, HTTP error or checksum mismatch; the message names the URL,
            the destination and ``manual`` (how to put the file there by hand).
    """
    dest = Path(dest)
    hint = f" Manual step: {manual}" if manual else f" Manual step: download {url} to {dest}."
    if dest.exists():
        if sha256 is None or sha256sum(dest) == sha256:
            return dest
        raise DatasetUnavailableError(f"{dest}: checksum mismatch (expected sha256 {sha256}); "
                                      f"delete it and retry.{hint}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            payload = resp.read()
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise DatasetUnavailableError(f"cannot download {url} ({err}).{hint}") from err
    if sha256 is not None and hashlib.sha256(payload).hexdigest() != sha256:
        raise DatasetUnavailableError(f"{url}: checksum mismatch (expected sha256 {sha256}).{hint}")
    with atomic_write(dest) as fh:
        fh.write(payload)
    return dest


def copy_atomic(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Copy a file atomically."""
    with open(src, "rb") as fin, atomic_write(dest) as fout:
        shutil.copyfileobj(fin, fout)


class DomainDataModule(L.LightningDataModule):
    """Base DataModule: a cache directory, a seed and the usual loader settings.

    Args:
        root: data directory (default ``$DOMAINDIFF_DATA/<name>``).
        batch_size: training batch size.
        num_workers: DataLoader workers.
        seed: seed of any generation or split.
    """

    #: name of the cache subdirectory (subclasses set it)
    name: str = "data"

    def __init__(self, root: str | None = None, batch_size: int = 32, num_workers: int = 0,
                 seed: int = 0) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.root = Path(root) if root else None
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed

    @property
    def cache_dir(self) -> Path:
        """Where this dataset's files live (created on first use)."""
        path = self.root if self.root is not None else data_root() / self.name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def download(self, url: str, dest: str | os.PathLike, sha256: str | None = None,
                 manual: str = "") -> Path:
        """See :func:`download`; relative ``dest`` is taken inside :attr:`cache_dir`."""
        dest = Path(dest)
        if not dest.is_absolute():
            dest = self.cache_dir / dest
        return download(url, dest, sha256, manual)

    atomic_write = staticmethod(atomic_write)
    atomic_save = staticmethod(atomic_save)
    atomic_savez = staticmethod(atomic_savez)
