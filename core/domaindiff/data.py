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
import json
import os
import secrets
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator
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


def _umask() -> int:
    """The process's umask (read without changing it where ``/proc`` tells it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file next to ``path``; rename it onto ``path`` only on success.

    The file ends with the permissions a plain ``open(path, "w")`` gives (``0o666 & ~umask``),
    not the 0600 of the temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as fh:
            if hasattr(os, "fchmod"):
                os.fchmod(fh.fileno(), 0o666 & ~_umask())
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
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub: a **dict could be allow_pickle
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
             manual: str = "", timeout: float = 30.0, size: int | None = None) -> Path:
    """Download ``url`` to ``dest`` (skipped if present and matching), verify, write atomically.

    The payload is streamed into a temporary file next to ``dest`` and renamed onto it only once
    its size and checksum match, so an interrupted or corrupt download never remains at ``dest``.

    Args:
        url: where to fetch the file.
        dest: where it is stored.
        sha256: the published SHA-256 (hex); checked on the download and on a present file.
        manual: how to put the file there by hand (quoted in every error).
        timeout: network timeout in seconds.
        size: the published size in bytes; checked like ``sha256``.

    Raises:
        DatasetUnavailableError: offline, HTTP error, size or checksum mismatch; the message names
            the URL or the file, and ``manual``.
    """
    dest = Path(dest)
    hint = f" Manual step: {manual}" if manual else f" Manual step: download {url} to {dest}."
    if dest.exists():
        _check_file(dest, sha256, size, f"{dest}", f"; delete it and retry.{hint}")
        return dest
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, atomic_write(dest) as fh:
            digest, got = hashlib.sha256(), 0
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                digest.update(chunk)
                got += len(chunk)
                fh.write(chunk)
            if size is not None and got != size:
                raise DatasetUnavailableError(f"{url}: size {got} != {size} bytes (truncated "
                                              f"download?).{hint}")
            if sha256 is not None and digest.hexdigest() != sha256:
                raise DatasetUnavailableError(f"{url}: checksum mismatch (expected sha256 "
                                              f"{sha256}, got {digest.hexdigest()}).{hint}")
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise DatasetUnavailableError(f"cannot download {url} ({err}).{hint}") from err
    return dest


def _check_file(path: Path, sha256: str | None, size: int | None, name: str, tail: str) -> None:
    """Raise :class:`DatasetUnavailableError` if ``path``'s size or sha256 is not the expected."""
    if size is not None and path.stat().st_size != size:
        raise DatasetUnavailableError(f"{name}: size {path.stat().st_size} != {size} bytes{tail}")
    if sha256 is not None and sha256sum(path) != sha256:
        raise DatasetUnavailableError(f"{name}: checksum mismatch (expected sha256 {sha256}){tail}")


def copy_atomic(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Copy a file atomically."""
    with open(src, "rb") as fin, atomic_write(dest) as fout:
        shutil.copyfileobj(fin, fout)


class CacheError(DatasetUnavailableError):
    """A cache entry is incomplete or corrupt (missing manifest, missing, short or altered file)."""


class CacheWarning(UserWarning):
    """A broken cache entry was found and is being rebuilt (the message names it and the fault)."""


#: name of the manifest file inside a cache entry
MANIFEST = "MANIFEST.json"
_TMP_TAG = ".building-"
_OLD_TAG = ".stale-"
_STALE_AFTER_S = 24 * 3600.0


def _entry_files(root: Path) -> list[Path]:
    """Every regular file under ``root`` except the manifest, sorted; symlinks are refused."""
    files = []
    for item in sorted(root.rglob("*")):
        if item.is_symlink():
            raise CacheError(f"{item}: symbolic links are not allowed in a cache entry")
        if item.is_file() and item.relative_to(root).as_posix() != MANIFEST:
            files.append(item)
    return files


def _write_manifest(root: Path, description: str) -> None:
    """Write ``root/MANIFEST.json`` listing each file's relative path, size and sha256."""
    listed = [{"path": f.relative_to(root).as_posix(), "size": f.stat().st_size,
               "sha256": sha256sum(f)} for f in _entry_files(root)]
    text = json.dumps({"format": 1, "description": description, "files": listed}, indent=1)
    with open(root / MANIFEST, "w", encoding="utf-8") as fh:
        fh.write(text + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _read_manifest(path: Path) -> list[dict[str, Any]]:
    """The manifest's file list; :class:`CacheError` if it is absent or malformed."""
    manifest = path / MANIFEST
    if not path.is_dir():
        raise CacheError(f"cache entry {path}: not a directory")
    if not manifest.is_file():
        raise CacheError(f"cache entry {path}: no {MANIFEST} (incomplete build)")
    try:
        files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
        for item in files:
            str(item["path"]), int(item["size"]), str(item["sha256"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise CacheError(f"cache entry {path}: {MANIFEST} is malformed ({err!r})") from err
    return files


def verify_cache_entry(path: str | os.PathLike) -> None:
    """Check a cache entry against its manifest: every listed file present, same size and sha256.

    Raises:
        CacheError: naming the entry and the first bad file (or the missing manifest).
    """
    path = Path(path)
    for item in _read_manifest(path):
        rel = item["path"]
        file = path / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise CacheError(f"cache entry {path}: {MANIFEST} lists {rel!r} outside the entry")
        if not file.is_file():
            raise CacheError(f"cache entry {path}: {rel} is missing")
        size = file.stat().st_size
        if size != int(item["size"]):
            raise CacheError(f"cache entry {path}: {rel} has size {size} != {item['size']} "
                             "(truncated or altered)")
        if sha256sum(file) != item["sha256"]:
            raise CacheError(f"cache entry {path}: {rel} has the wrong sha256 (altered)")


def _owner_alive(name: str) -> bool:
    """Whether the process that made the temporary ``name`` (``...-<pid>-<hex>``) still runs."""
    with contextlib.suppress(ValueError, IndexError):
        pid = int(name.rsplit("-", 2)[-2])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return False


def _clean_leftovers(path: Path) -> None:
    """Remove hidden temporaries next to ``path`` left by killed builds (owner dead or old)."""
    if not path.parent.is_dir():
        return
    for tag in (_TMP_TAG, _OLD_TAG):
        for item in path.parent.glob(f".{path.name}{tag}*"):
            age = time.time() - item.lstat().st_mtime
            if not _owner_alive(item.name) or age > _STALE_AFTER_S:
                shutil.rmtree(item, ignore_errors=True)


def _remove(path: Path) -> None:
    """Remove a file or a directory tree (ignoring one that is already gone)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _hidden_sibling(path: Path, tag: str) -> Path:
    """A fresh hidden name next to ``path``: ``.<name><tag><pid>-<hex>``."""
    return path.parent / f".{path.name}{tag}{os.getpid()}-{secrets.token_hex(4)}"


def _install(tmp: Path, path: Path) -> None:
    """Rename the finished ``tmp`` onto ``path``; a broken entry there is moved aside first.

    If a concurrent builder installed a valid entry meanwhile, that one is kept and ``tmp`` is
    discarded, so readers never see an entry disappear under them.
    """
    for _ in range(10):
        try:
            os.rename(tmp, path)
            return
        except OSError:
            if not (path.exists() or path.is_symlink()):
                raise
        try:
            verify_cache_entry(path)
        except CacheError:
            old = _hidden_sibling(path, _OLD_TAG)
            with contextlib.suppress(FileNotFoundError):
                os.rename(path, old)
            _remove(old)
            continue
        shutil.rmtree(tmp, ignore_errors=True)
        return
    raise CacheError(f"cache entry {path}: could not be moved into place (concurrent builders?)")


def build_cache_entry(path: str | os.PathLike, build: Callable[[Path], None], *,
                      description: str = "") -> Path:
    """Return the verified cache directory ``path``, building it first if needed.

    A directory whose ``MANIFEST.json`` verifies (see :func:`verify_cache_entry`) is returned as is.
    Otherwise (absent, no manifest, or a file missing, short or altered; a broken entry is reported
    with a warning and never trusted) ``build(tmp)`` fills a fresh hidden directory next to ``path``,
    the manifest is written last, and the directory is renamed onto ``path`` as a unit. If ``build``
    raises, the temporary directory is removed; one left by a killed run is never read as an entry
    and is removed by the next build. Files and directories get the usual (umask) permissions.

    Args:
        path: the entry's directory.
        build: fills the directory it is given with the entry's files.
        description: recorded in the manifest (what the entry holds, its parameters).

    Returns:
        ``path``.
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        try:
            verify_cache_entry(path)
            return path
        except CacheError as err:
            warnings.warn(f"{err}; rebuilding", CacheWarning, stacklevel=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(path)
    tmp = _hidden_sibling(path, _TMP_TAG)
    os.mkdir(tmp)  # mode 0o777 & ~umask, unlike mkdtemp's 0o700
    try:
        build(tmp)
        _write_manifest(tmp, description)
        _install(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


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
                 manual: str = "", size: int | None = None) -> Path:
        """See :func:`download`; relative ``dest`` is taken inside :attr:`cache_dir`."""
        dest = Path(dest)
        if not dest.is_absolute():
            dest = self.cache_dir / dest
        return download(url, dest, sha256, manual, size=size)

    def cache_entry(self, name: str | os.PathLike, build: Callable[[Path], None], *,
                    description: str = "") -> Path:
        """See :func:`build_cache_entry`; relative ``name`` is taken inside :attr:`cache_dir`."""
        path = Path(name)
        if not path.is_absolute():
            path = self.cache_dir / path
        return build_cache_entry(path, build, description=description)

    def train_loader(self, dataset: Any, *, shuffle: bool = True, drop_last: bool = False,
                     loader_cls: type | None = None, **kwargs: Any) -> Any:
        """The train DataLoader: order seeded by ``(seed, epoch)``, resumable mid-epoch.

        A run resumed from a checkpoint starts at the first batch the checkpointed run had not
        trained on (see :mod:`domaindiff.resume`). ``loader_cls`` defaults to torch's DataLoader
        (pass PyG's for graphs); ``kwargs`` go to it.
        """
        from domaindiff.resume import make_train_loader

        position, self._resume_position = getattr(self, "_resume_position", None), None
        extra = {"loader_cls": loader_cls} if loader_cls is not None else {}
        return make_train_loader(dataset, batch_size=self.batch_size, seed=self.seed,
                                 trainer=self.trainer, position=position, shuffle=shuffle,
                                 drop_last=drop_last, num_workers=self.num_workers,
                                 **extra, **kwargs)

    def state_dict(self) -> dict[str, Any]:
        """The train loader's position (epoch, batches done), saved in every checkpoint."""
        from domaindiff.resume import loader_position

        pos = loader_position(self.trainer) if self.trainer is not None else None
        return {"train_position": pos} if pos is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume the train loader at the checkpoint's position (used by the next loader)."""
        self._resume_position = state_dict.get("train_position")

    atomic_write = staticmethod(atomic_write)
    atomic_save = staticmethod(atomic_save)
    atomic_savez = staticmethod(atomic_savez)
