"""The catalogue of bad inputs: what a hostile or careless user does, and what they must be told.

Each domain keeps its entries in ``tests/<area>/test_bad_inputs.py`` as a module-level
``CATALOGUE: list[BadInput]`` and runs them with :func:`assert_refused`. An entry names the command
a user runs (a CLI line or a Python call), a regular expression the one message must match (it
names the file, line, field or argument and what was expected), and a ``check`` that performs the
command in a temporary directory and returns the message it produced. ``tests/test_catalogue.py``
counts the entries across all areas.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BadInput:
    """One bad input.

    Attributes:
        id: short unique name (``area-what``), used as the pytest id.
        command: what the user runs, as they would type it.
        expected: regular expression the message must match (searched, case-sensitive).
        check: ``check(tmp_path) -> message``: performs the command and returns the message it
            produced; it must itself fail the test if the command did not fail.
        max_lines: the message may not be longer than this (no chained tracebacks).
    """

    id: str
    command: str
    expected: str
    check: Callable[[Path], str]
    max_lines: int = 6


def assert_refused(case: BadInput, tmp_path: Path) -> str:
    """Run ``case`` and assert that its message matches and is short; return the message."""
    message = case.check(tmp_path)
    assert message, f"{case.id}: no message"
    assert re.search(case.expected, message), \
        f"{case.id}: message does not match {case.expected!r}:\n{message}"
    assert "Traceback (most recent call last)" not in message, f"{case.id}: traceback:\n{message}"
    lines = [ln for ln in message.strip().splitlines() if ln.strip()]
    assert len(lines) <= case.max_lines, \
        f"{case.id}: {len(lines)} lines (at most {case.max_lines}):\n{message}"
    return message


def raised(exc_types: type[BaseException] | tuple[type[BaseException], ...],
           fn: Callable[[], object]) -> str:
    """Call ``fn``; return the message of the expected exception (fail if none is raised)."""
    try:
        fn()
    except exc_types as err:
        return str(err)
    raise AssertionError(f"{fn} raised nothing (expected {exc_types})")


def run_cli(args: Sequence[str], cwd: str | os.PathLike | None = None
            ) -> subprocess.CompletedProcess:
    """Run ``domaindiff <args>`` in this process (fast: no re-import of torch and Lightning).

    Returns:
        The exit code with the captured stdout and stderr (``SystemExit`` becomes the code).
    """
    from domaindiff.cli import main

    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as ex:
                code = ex.code if isinstance(ex.code, int) else 1
    finally:
        os.chdir(old)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def cli_message(args: Sequence[str], cwd: str | os.PathLike | None = None) -> str:
    """Run ``domaindiff <args>`` in this process; assert a non-zero exit; return its stderr.

    Use :func:`cli_message_subprocess` where the command must run as users run it (Hydra apps,
    signals, environment).
    """
    res = run_cli(args, cwd)
    assert res.returncode != 0, f"domaindiff {' '.join(args)} exited 0; stdout:\n{res.stdout[-2000:]}"
    return res.stderr


def cli_message_subprocess(args: Sequence[str], cwd: str | os.PathLike | None = None,
                           timeout: float = 300) -> str:
    """Run ``domaindiff <args>`` in a fresh process; assert a non-zero exit; return its stderr."""
    import sys

    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    res = subprocess.run([sys.executable, "-m", "domaindiff.cli", *args], cwd=cwd,
                         capture_output=True, text=True, env=env, timeout=timeout)
    assert res.returncode != 0, f"domaindiff {' '.join(args)} exited 0:\n{res.stdout[-2000:]}"
    return res.stderr
