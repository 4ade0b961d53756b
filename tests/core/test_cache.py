"""Cache entries are built in one go, verified on use, and rebuilt (with a warning) when broken."""

import json
import os
import signal
import time
from pathlib import Path

import pytest

from domaindiff.data import (
    MANIFEST,
    CacheError,
    CacheWarning,
    DatasetUnavailableError,
    DomainDataModule,
    build_cache_entry,
    download,
    sha256sum,
    verify_cache_entry,
)


class Builder:
    """A build function that writes two files and counts its calls."""

    def __init__(self, fail_after_first: bool = False) -> None:
        self.calls = 0
        self.fail_after_first = fail_after_first

    def __call__(self, tmp: Path) -> None:
        self.calls += 1
        (tmp / "a.bin").write_bytes(b"x" * 40960)
        if self.fail_after_first:
            raise RuntimeError("simulated crash midway")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text("hello")


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def test_build_once_and_reuse(tmp_path):
    entry, build = tmp_path / "cache" / "entry", Builder()
    assert build_cache_entry(entry, build, description="demo v1") == entry
    assert build_cache_entry(entry, build) == entry
    assert build.calls == 1
    manifest = json.loads((entry / MANIFEST).read_text())
    assert manifest["description"] == "demo v1"
    assert {f["path"]: f["size"] for f in manifest["files"]} == {"a.bin": 40960, "sub/b.txt": 5}
    assert manifest["files"][0]["sha256"] == sha256sum(entry / "a.bin")
    assert _siblings(entry) == ["entry"]  # no hidden temporaries left
    verify_cache_entry(entry)


def test_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        entry = build_cache_entry(tmp_path / "entry", Builder())
    finally:
        os.umask(old)
    assert entry.stat().st_mode & 0o777 == 0o755
    assert (entry / "sub").stat().st_mode & 0o777 == 0o755
    assert (entry / MANIFEST).stat().st_mode & 0o777 == 0o644


def test_truncated_file_is_detected_and_rebuilt_with_a_warning(tmp_path):
    entry, build = tmp_path / "entry", Builder()
    build_cache_entry(entry, build)
    with open(entry / "a.bin", "r+b") as fh:
        fh.truncate(1203)
    with pytest.raises(CacheError, match=r"entry.*a\.bin has size 1203 != 40960"):
        verify_cache_entry(entry)
    with pytest.warns(CacheWarning, match=r"a\.bin has size 1203 != 40960.*rebuilding"):
        build_cache_entry(entry, build)
    assert build.calls == 2 and (entry / "a.bin").stat().st_size == 40960
    verify_cache_entry(entry)
    assert _siblings(entry) == ["entry"]


def test_altered_or_missing_file_is_rebuilt(tmp_path):
    entry, build = tmp_path / "entry", Builder()
    build_cache_entry(entry, build)
    (entry / "sub" / "b.txt").write_text("HELLO")  # same size, other bytes
    with pytest.raises(CacheError, match=r"sub/b\.txt has the wrong sha256"):
        verify_cache_entry(entry)
    with pytest.warns(UserWarning, match="wrong sha256"):
        build_cache_entry(entry, build)
    (entry / "sub" / "b.txt").unlink()
    with pytest.warns(UserWarning, match=r"sub/b\.txt is missing"):
        build_cache_entry(entry, build)
    assert build.calls == 3 and (entry / "sub" / "b.txt").read_text() == "hello"


def test_missing_or_malformed_manifest_is_rebuilt(tmp_path):
    entry, build = tmp_path / "entry", Builder()
    build_cache_entry(entry, build)
    (entry / MANIFEST).unlink()
    with pytest.raises(CacheError, match=f"no {MANIFEST}"):
        verify_cache_entry(entry)
    with pytest.warns(UserWarning, match=f"entry: no {MANIFEST}.*rebuilding"):
        build_cache_entry(entry, build)
    (entry / MANIFEST).write_text("{not json")
    with pytest.warns(UserWarning, match="malformed"):
        build_cache_entry(entry, build)
    assert build.calls == 3
    verify_cache_entry(entry)


def test_a_file_in_place_of_the_entry_is_replaced(tmp_path):
    entry = tmp_path / "entry"
    entry.write_text("junk")
    with pytest.warns(UserWarning, match="not a directory"):
        build_cache_entry(entry, Builder())
    verify_cache_entry(entry)


def test_build_raising_midway_leaves_nothing(tmp_path):
    entry = tmp_path / "entry"
    with pytest.raises(RuntimeError, match="simulated crash"):
        build_cache_entry(entry, Builder(fail_after_first=True))
    assert list(tmp_path.iterdir()) == []


def test_build_raising_keeps_no_broken_entry(tmp_path):
    """A failed rebuild of a broken entry leaves no entry that could be trusted."""
    entry = tmp_path / "entry"
    build_cache_entry(entry, Builder())
    (entry / MANIFEST).unlink()
    with pytest.warns(UserWarning), pytest.raises(RuntimeError):
        build_cache_entry(entry, Builder(fail_after_first=True))
    with pytest.raises(CacheError):
        verify_cache_entry(entry)
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_sigkill_mid_build_then_next_call_rebuilds(tmp_path):
    """A forked builder (same code, no re-import) is SIGKILLed while its build runs."""
    entry = tmp_path / "entry"
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        try:
            def build(tmp: Path) -> None:
                (tmp / "a.bin").write_bytes(b"partial")
                os.write(write_fd, b"building")
                time.sleep(60)

            build_cache_entry(entry, build)
        finally:
            os._exit(1)
    try:
        assert os.read(read_fd, 8) == b"building"
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(read_fd)
        os.close(write_fd)
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(".entry.building-")
    assert not entry.exists()  # the killed build is not an entry
    with pytest.raises(CacheError):
        verify_cache_entry(tmp_path / leftovers[0])  # and would not verify as one
    build = Builder()
    build_cache_entry(entry, build)
    assert build.calls == 1 and (entry / "a.bin").stat().st_size == 40960
    assert _siblings(entry) == ["entry"]  # the dead build's temporary was cleaned


def test_live_builders_temporaries_are_kept(tmp_path):
    """A temporary of a running process (here: this one) is not removed by another build."""
    live = tmp_path / f".entry.building-{os.getpid()}-abcd1234"
    live.mkdir()
    build_cache_entry(tmp_path / "entry", Builder())
    assert live.is_dir()


def test_concurrent_builders_both_see_a_valid_entry(tmp_path):
    entry = tmp_path / "entry"
    outer = Builder()

    def racing_build(tmp: Path) -> None:
        outer(tmp)
        build_cache_entry(entry, Builder())  # another builder finishes first

    build_cache_entry(entry, racing_build)
    verify_cache_entry(entry)
    assert _siblings(entry) == ["entry"]


def test_manifest_paths_cannot_escape(tmp_path):
    entry = tmp_path / "entry"
    build_cache_entry(entry, Builder())
    manifest = json.loads((entry / MANIFEST).read_text())
    manifest["files"][0]["path"] = "../outside"
    (entry / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CacheError, match="outside the entry"):
        verify_cache_entry(entry)


def test_datamodule_cache_entry_is_inside_cache_dir(tmp_path):
    class Mine(DomainDataModule):
        name = "mine"

    path = Mine(root=str(tmp_path / "root")).cache_entry("v1", Builder())
    assert path == tmp_path / "root" / "v1"
    verify_cache_entry(path)


def test_download_checks_size_and_never_leaves_a_partial_file(tmp_path, monkeypatch):
    src = tmp_path / "src.bin"
    src.write_bytes(b"p" * 3000)
    dest = tmp_path / "d" / "copy.bin"
    with pytest.raises(DatasetUnavailableError, match=r"size 3000 != 4000"):
        download(src.as_uri(), dest, size=4000)
    assert not dest.exists()
    download(src.as_uri(), dest, sha256=sha256sum(src), size=3000)
    with pytest.raises(DatasetUnavailableError, match=rf"{dest.name}: size 3000 != 10"):
        download(src.as_uri(), dest, size=10)

    class Broken:
        """A response that sends some bytes, then the connection drops."""

        def __init__(self) -> None:
            self.sent = False

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, n: int = -1) -> bytes:
            if self.sent:
                raise ConnectionResetError("connection reset by peer")
            self.sent = True
            return b"half"

    monkeypatch.setattr("urllib.request.urlopen", lambda *a, **k: Broken())
    other = tmp_path / "d" / "other.bin"
    with pytest.raises(DatasetUnavailableError, match="connection reset"):
        download("http://example.invalid/other.bin", other)
    assert sorted(p.name for p in other.parent.iterdir()) == ["copy.bin"]  # no partial, no temp


def test_wrong_checksum_names_the_file(tmp_path):
    f = tmp_path / "present.bin"
    f.write_bytes(b"abc")
    with pytest.raises(DatasetUnavailableError, match=r"present\.bin: checksum mismatch"):
        download("http://127.0.0.1:9/present.bin", f, sha256="0" * 64)


def test_stale_temporaries_are_cleaned_by_age(tmp_path):
    old = tmp_path / f".entry.building-{os.getpid()}-deadbeef"
    old.mkdir()
    past = time.time() - 2 * 24 * 3600
    os.utime(old, (past, past))
    build_cache_entry(tmp_path / "entry", Builder())
    assert not old.exists()
