"""Run every command line of the READMEs in a venv that holds only the wheels (no checkout).

``scripts/check_wheel_install.sh`` builds the wheels, makes the venv and calls this script with
that venv's interpreter; run alone it needs such a venv (``--venv``). Each README code block is
read, ``\\`` continuations are joined, ``#`` comments dropped, and each command line is planned:

* ``domaindiff fit`` at paper scale: the line with ``--print_config``, then once more with
  ``--trainer.max_steps=2 --trainer.limit_val_batches=0`` and small data sizes; it passes when the
  run leaves a ``last.ckpt``. Lines that are already short (``--trainer.max_steps``,
  ``--print_config``) run as written.
* ``domaindiff eval|sample``: the checkpoint placeholder (``run.ckpt``, ``RUN.ckpt``, ``ckpt=...``)
  is replaced by the ``last.ckpt`` of the matching short fit, and sizes are shrunk (number of
  samples / items / images, sampler steps capped); the command that ran is recorded.
* ``domaindiff distill``: the teacher placeholder is the matching short fit's ``last.ckpt``,
  ``--iterations 2``; the student it writes (``--out``) is what later lines naming that file load.
* ``python -m <plugin>.demo``: runs with the demo's own size flags made tiny.
* A line with ``...`` in it is ``ELIDED`` (not a line a shell runs as written).
* A line that refuses in one line naming ``pip install '<dist>[<extra>]'`` is ``NEEDS_EXTRA`` (the
  wheels are installed without extras); the note says whether the README says so near the line.
* ``python benchmarks/...``, ``make ...``, ``pip install -e ...`` and ``pip wheel ./...``: need a
  checkout; the check records whether the README says so next to the line.
* Lines that need data that cannot be had offline (CAMUS, EchoNet, MD17, ETH-UCY files) pass as
  ``NEEDS_DATA`` when they exit non-zero with at most two lines on stderr, no traceback, naming
  the path or the manual step.

Every line runs from an empty directory outside the repository with ``DOMAINDIFF_THREADS=1``,
``DOMAINDIFF_DATA`` set, and the venv's ``bin`` first on ``PATH``. Prints a table and writes
JSON atomically.

    /tmp/wheelvenv/bin/python benchmarks/wheel_install_check.py --venv /tmp/wheelvenv \\
        --run-dir /tmp/wheelrun --data /tmp/wheeldata --out benchmarks/results/wheel_install_check.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
READMES = ["README.md", "plugins/graphs/README.md", "plugins/timeseries/README.md",
           "plugins/trajectories/README.md", "plugins/medical/README.md", "core/README.md"]

# data that no wheel can bring offline: the line must fail with one clear line
OFFLINE_MISSING = ("md17", "eth_ucy", "camus", "echonet", "CAMUS", "EchoNet", "import-gdss",
                   "/path/to/", "DIR/")  # the last two: the user's own files (placeholders)

# extra overrides that make a paper-scale fit tiny (appended after the README's own arguments)
FIT_SHRINK = {
    "toy": ["--data.init_args.num_train=512", "--data.init_args.num_val=64"],
    "graphs": ["--data.init_args.batch_size=16"],
    "timeseries": ["--data.init_args.batches_per_epoch=2", "--data.init_args.batch_size=8"],
    "trajectories": ["--data.init_args.batch_size=16"],
    "medical": ["--data.init_args.batch_size=2"],
}
NBODY_SHRINK = ["--data.init_args.num_train=64", "--data.init_args.num_val=16",
                "--data.init_args.num_test=16"]
MD17_SHRINK = ["--data.init_args.standin_steps=2000"]  # the offline stand-in's MD steps (60000)
MEDICAL_SYNTH_SHRINK = ["--data.init_args.num_train=8", "--data.init_args.num_val=2",
                        "--data.init_args.num_test=2"]

# Hydra overrides that make an evaluation small (a key the line sweeps is left alone)
EVAL_SHRINK = {
    "toy": {"num_samples": "128", "nll_samples": "8"},
    "graphs": {"num_samples": "8", "batch_size": "8", "nll_graphs": "1"},
    "timeseries": {"num_samples": "4", "num_test_windows": "1", "deepar_epochs": "1",
                   "tstr_samples": "16", "tstr_deepar_epochs": "1", "anomaly_repeats": "1",
                   "anomaly_steps": "5", "anomaly_samples": "2", "refine_iterations": "2",
                   "plot_windows": "1"},
    "trajectories": {"num_items": "8", "k": "2", "batch_size": "8", "nbody.num_train": "64",
                     "nbody.num_val": "16", "nbody.num_test": "16", "scores.epochs": "2",
                     "kmeans.samples": "4", "kmeans.clusters": "2", "+md17.standin_steps": "2000"},
    "medical": {"max_images": "2", "batch_size": "2", "num_samples": "2"},
}
MAX_EVAL_STEPS = 20
DEMO_SHRINK = {
    "domaindiff.toy.demo": ["--epochs", "1"],
    "domaindiff_graphs.demo": ["--epochs", "1", "--mol-epochs", "1"],
    "domaindiff_timeseries.demo": ["--epochs", "1", "--samples", "2"],
    "domaindiff_trajectories.demo": ["--epochs", "1"],
    "domaindiff_medical.demo": ["--max-steps", "2", "--train-seconds", "5", "--num-train", "8",
                                "--num-test", "2", "--num-samples", "1"],
}
CKPT_PLACEHOLDER = re.compile(r"(\.ckpt$|^\.\.\.$|^<.*>$)")


@dataclass
class Line:
    """One command line of a README."""

    readme: str
    lineno: int
    text: str
    block: int
    argv: list[str] = field(default_factory=list)


@dataclass
class Result:
    """What running (or not running) one README line showed."""

    readme: str
    lineno: int
    line: str
    status: str  # PASS | FAIL | NEEDS_DATA | NEEDS_EXTRA | NEEDS_CHECKOUT | SETUP | ELIDED
    ran: list[str] = field(default_factory=list)
    seconds: float = 0.0
    note: str = ""
    when: str = ""  # UTC start of the run that checked it ('' = an older run, kept by --merge)


def extract(readme: Path, rel: str) -> list[Line]:
    """Command lines of the fenced code blocks of ``readme`` (continuations joined)."""
    out: list[Line] = []
    inside, block, pending, start = False, 0, "", 0
    for no, raw in enumerate(readme.read_text().splitlines(), 1):
        if raw.lstrip().startswith("```"):
            inside = not inside
            block += 1
            continue
        if not inside:
            continue
        if not pending:
            start = no
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        text, pending = (pending + raw).strip(), ""
        # a placeholder such as ``ckpt=<its checkpoint>`` is one word
        text = re.sub(r"=<([^>]*)>", lambda m: "=<" + m.group(1).replace(" ", "_") + ">", text)
        try:
            argv = shlex.split(text, comments=True)
        except ValueError:
            continue
        core = _strip_prefix(argv)
        if core and core[0] in ("domaindiff", "python", "make"):
            out.append(Line(rel, start, _drop_comment(text), block, argv))
    return out


def _drop_comment(text: str) -> str:
    """``text`` without a trailing shell comment and with runs of blanks made single."""
    try:
        return shlex.join(shlex.split(text, comments=True)) if "#" in text else " ".join(text.split())
    except ValueError:
        return text


def _strip_prefix(argv: list[str]) -> list[str]:
    """``argv`` without leading ``VAR=value`` and ``nice -n N``."""
    i = 0
    while i < len(argv) and re.match(r"^[A-Z_][A-Z0-9_]*=", argv[i]):
        i += 1
    if i < len(argv) and argv[i] == "nice":
        i += 3 if i + 1 < len(argv) and argv[i + 1] == "-n" else 1
    return argv[i:]


def _says_near(readme: Path, lineno: int, text: str) -> bool:
    """Whether ``text`` appears in ``readme`` within 25 lines before ``lineno`` (or just after)."""
    if not readme.is_file():
        return False
    lines = readme.read_text().splitlines()
    return text in "\n".join(lines[max(0, lineno - 25): lineno + 2])


def _says_checkout(readme: Path, lineno: int) -> bool:
    """Whether the README text near ``lineno`` says the line needs a checkout of the repository."""
    lines = readme.read_text().splitlines()
    near = " ".join(lines[max(0, lineno - 25): lineno + 2]).lower()
    return any(w in near for w in ("checkout", "clone", "repository root", "from the repository"))


class Runner:
    """Runs planned commands in fresh directories and remembers the checkpoints fits leave."""

    def __init__(self, venv: Path, run_dir: Path, data: Path, timeout: float) -> None:
        """Set up the environment every command gets."""
        self.run_dir, self.timeout = run_dir, timeout
        self.env = dict(os.environ)
        self.env.update(PATH=f"{venv / 'bin'}:{os.environ.get('PATH', '')}",
                        DOMAINDIFF_THREADS="1", OMP_NUM_THREADS="1", DOMAINDIFF_DATA=str(data),
                        MPLBACKEND="Agg", VIRTUAL_ENV=str(venv))
        self.env.pop("PYTHONPATH", None)
        self.ckpts: dict[str, Path] = {}
        self.needs_data: dict[str, str] = {}  # fit key -> why its fit could not get its data
        # "<plugin>:<file name>" a line wrote with --out -> where it is / why it could not
        self.outputs: dict[str, Path] = {}
        self.outputs_need_data: dict[str, str] = {}
        self.last_cwd: Path | None = None
        self.count = 0

    def fresh_dir(self, tag: str) -> Path:
        """A new empty directory for one README line."""
        self.count += 1
        d = self.run_dir / f"{self.count:03d}_{re.sub(r'[^a-z0-9]+', '_', tag.lower())[:40]}"
        d.mkdir(parents=True)
        return d

    def run(self, argv: list[str], cwd: Path) -> tuple[int, str, str, float]:
        """Run ``argv`` (a README line, already rewritten) and return rc, stdout, stderr, time."""
        t0 = time.perf_counter()
        try:
            p = subprocess.run(["nice", "-n", "10", *argv], cwd=cwd, env=self.env,
                               capture_output=True, text=True, timeout=self.timeout)
            rc, so, se = p.returncode, p.stdout, p.stderr
        except subprocess.TimeoutExpired as e:
            rc, so, se = 124, str(e.stdout or ""), f"timed out after {self.timeout:.0f} s"
        return rc, so, se, time.perf_counter() - t0


def _config_of(argv: list[str]) -> str:
    """The ``--config`` value of a fit line ('' when none)."""
    for i, a in enumerate(argv):
        if a == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--config="):
            return a.split("=", 1)[1]
    return ""


def _plugin_of_fit(argv: list[str]) -> str:
    """The plugin a fit line trains (from its config name or model class)."""
    cfg = _config_of(argv)
    if ":" in cfg:
        return cfg.split(":", 1)[0]
    return "toy" if "ToyDiffusion" in argv else ""


def _fit_key(argv: list[str]) -> str:
    """Which checkpoint a fit line provides for the evaluation lines."""
    cfg = _config_of(argv) or "toy:model"
    if "TSDiffCond" in argv:
        return "timeseries:cond"
    if cfg == "trajectories:uncond_charged" and any("MD17" in a for a in argv):
        return "trajectories:uncond_md17"
    return cfg


def _eval_key(plugin: str, argv: list[str]) -> str:
    """Which short fit's checkpoint an evaluation line should load."""
    text = " ".join(argv)
    if plugin == "toy":
        return "toy:demo"
    if plugin == "graphs":
        return "graphs:qm9" if "dataset=qm9" in text else "graphs:community_small"
    if plugin == "timeseries":
        # a TSDiff-Cond row needs a forecaster with the same windows: the demo config's
        return "timeseries:demo" if "cond_ckpt=" in text else "timeseries:taylor"
    if plugin == "trajectories":
        if "uncond" in text and "md17" in text:
            return "trajectories:uncond_md17"
        if "uncond" in text:
            return "trajectories:uncond_charged"
        if "md17" in text:
            return "trajectories:md17_aspirin"
        if "springs" in text:
            return "trajectories:nbody_springs"
        return "trajectories:nbody_charged"
    return "medical:demo"


def _last_ckpt(d: Path) -> Path | None:
    """The newest ``last.ckpt`` under ``d``."""
    found = sorted(d.rglob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def _clear_refusal(rc: int, stderr: str) -> tuple[bool, str]:
    """Whether a failed run said why in one clear line (no traceback); returns that message."""
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    # library warnings may precede the message; the message is the last line
    msg = lines[-1] if lines else ""
    ok = rc not in (0, 124) and "Traceback" not in stderr and bool(msg) and len(msg) < 600
    return ok, msg


def _needs_offline_missing(argv: list[str]) -> bool:
    """Whether a line reads data that cannot be had offline (``MD17`` as a class name too)."""
    raw = " ".join(argv)
    text = raw.lower()
    if re.search(r"trajectories:nbody_\w+", text) and "simulate=true" not in text:
        return True  # the paper configs read the GeoTDM generator's files (simulate=false)
    return any(k in raw if k in ("/path/to/", "DIR/") else k.lower() in text
               for k in OFFLINE_MISSING)


def check_fit(r: Runner, ln: Line, argv: list[str], res: Result) -> None:
    """``--print_config`` and a two-step fit of a fit line; checks the fit leaves last.ckpt."""
    plugin = _plugin_of_fit(argv)
    cwd = r.last_cwd if "--ckpt_path" in argv and r.last_cwd else r.fresh_dir(ln.text[:40])
    already_short = "--print_config" in argv or any(a.startswith("--trainer.max_steps")
                                                    for a in argv)
    runs: list[list[str]] = []
    if already_short:
        runs.append(argv)
    else:
        runs.append([*argv, "--print_config"])
        shrink = list(FIT_SHRINK.get(plugin, []))
        text = " ".join(argv).lower()
        if plugin == "trajectories" and "md17" in text:  # the config's or ``--data ...MD17``
            shrink += MD17_SHRINK
        elif plugin == "trajectories" and ("nbody" in text or "charged" in text
                                           or "demo" in text):
            shrink += NBODY_SHRINK
        if plugin == "medical" and "medical:demo" in text:
            shrink += MEDICAL_SYNTH_SHRINK
        runs.append([*argv, "--trainer.max_steps=2", "--trainer.limit_val_batches=0",
                     "--trainer.max_time=00:00:04:00", *shrink])
    r.last_cwd = cwd
    _run_all(r, runs, cwd, res, need_ckpt="--print_config" not in runs[-1])
    if res.status == "PASS" and "--print_config" not in runs[-1]:
        ck = _last_ckpt(cwd)
        if ck is not None:
            r.ckpts.setdefault(_fit_key(argv), ck)
    elif res.status == "NEEDS_DATA":
        r.needs_data.setdefault(_fit_key(argv), f"{ln.readme}:{ln.lineno}: {res.note}")


def _run_all(r: Runner, runs: list[list[str]], cwd: Path, res: Result, need_ckpt: bool) -> None:
    """Run ``runs`` in ``cwd`` one after the other; the first failure decides the status."""
    for argv in runs:
        res.ran.append(shlex.join(argv))
        rc, so, se, dt = r.run(argv, cwd)
        res.seconds += dt
        if rc != 0:
            clear, msg = _clear_refusal(rc, se)
            # judged on the README's own line: the check's overrides (``+md17.standin_steps``,
            # a checkpoint path) must not make a line look like it reads offline-missing data
            readme_argv = shlex.split(res.line, comments=True) if res.line else argv
            extra = re.search(r"pip install '?[A-Za-z0-9_.-]+\[([A-Za-z0-9_-]+)\]", msg)
            if clear and _needs_offline_missing(readme_argv):
                res.status, res.note = "NEEDS_DATA", msg
            elif clear and extra:
                said = _says_near(ROOT / res.readme, res.lineno, f"[{extra.group(1)}]")
                res.status = "NEEDS_EXTRA"
                res.note = (f"{msg} (README {'says so' if said else 'does not say so'} "
                            "near the line)")
            else:
                res.status = "FAIL"
                noisy = [x for x in se.strip().splitlines() if "%|" not in x]  # no tqdm bars
                tail = noisy[-6:] or so.strip().splitlines()[-3:]
                res.note = f"rc={rc}: " + " | ".join(tail)
            return
        if "Traceback" in se:
            res.status, res.note = "FAIL", "exit 0 but a traceback on stderr: " + \
                " | ".join(se.strip().splitlines()[-3:])
            return
    if need_ckpt and _last_ckpt(cwd) is None:
        res.status, res.note = "FAIL", "the fit exited 0 but left no last.ckpt"
        return
    res.status = "PASS"


def _rewrite_eval(r: Runner, plugin: str, argv: list[str]) -> tuple[list[str], str]:
    """An evaluation line with a real checkpoint and small sizes; '' or why it cannot run."""
    out: list[str] = []
    keys: set[str] = set()
    shrink = EVAL_SHRINK.get(plugin, {})
    ck = r.ckpts.get(_eval_key(plugin, argv))
    cond = r.ckpts.get("timeseries:cond")
    for a in argv:
        k, sep, v = a.partition("=")
        if not sep or a.startswith("-"):
            out.append(a)
            continue
        keys.add(k.lstrip("+"))
        if k == "ckpt" and f"{plugin}:{v}" in r.outputs:  # a student an earlier line wrote
            out.append(f"{k}={r.outputs[f'{plugin}:{v}']}")
        elif k in ("ckpt", "cond_ckpt") and CKPT_PLACEHOLDER.search(v):
            path = cond if k == "cond_ckpt" else ck
            if path is None:
                return argv, (f"no README fit line trains the checkpoint {k}={v} needs "
                              f"({_eval_key(plugin, argv) if k == 'ckpt' else 'timeseries:cond'})")
            out.append(f"{k}={path}")
        elif k == "steps" and "," not in v and v.isdigit() and int(v) > MAX_EVAL_STEPS:
            out.append(f"steps={MAX_EVAL_STEPS}")
        elif k == "steps" and "," in v:
            out.append("steps=" + ",".join(s if int(s) <= MAX_EVAL_STEPS else str(MAX_EVAL_STEPS)
                                           for s in dict.fromkeys(v.split(","))))
        elif k.lstrip("+") in shrink and "," not in v and v.isdigit():
            out.append(f"{k}={min(int(v), int(shrink[k.lstrip('+')]))}")
        else:
            out.append(a)
    if "ckpt" not in keys:
        if ck is None:
            return argv, "no checkpoint from a short fit"
        out.insert(3, f"ckpt={ck}")
    for k, v in shrink.items():
        if k.lstrip("+") not in keys:
            out.append(f"{k}={v}")
    if "steps" not in keys:
        out.append(f"steps={MAX_EVAL_STEPS}")
    return out, ""


def check_eval(r: Runner, ln: Line, argv: list[str], res: Result) -> None:
    """Run an evaluation or sampling line against a short fit's checkpoint."""
    if argv[1] == "sample":
        given = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--ckpt"]
        ck = r.outputs.get(f"toy:{given[0]}") if given else None
        ck = ck or r.ckpts.get("toy:demo")
        if ck is None:
            res.status, res.note = "FAIL", "no toy checkpoint from a short fit"
            return
        new = [f"{ck}" if i > 0 and argv[i - 1] == "--ckpt" else a for i, a in enumerate(argv)]
    else:
        plugin = argv[2] if len(argv) > 2 else ""
        named = [f"{plugin}:{a[5:]}" for a in argv if a.startswith("ckpt=")]
        if named and named[0] in r.outputs_need_data:
            res.status = "NEEDS_DATA"
            res.note = f"its checkpoint's line needs data ({r.outputs_need_data[named[0]]})"
            return
        new, why = _rewrite_eval(r, plugin, argv)
        key = _eval_key(plugin, argv)
        if why and key not in r.ckpts and key in r.needs_data:
            # its only README fit needs data that cannot be had offline: not a broken line
            res.status, res.note = "NEEDS_DATA", f"its checkpoint's fit needs data ({r.needs_data[key]})"
            return
        if why:
            res.status, res.note = "FAIL", why
            return
    cwd = r.fresh_dir(ln.text[:40])
    _run_all(r, [new], cwd, res, need_ckpt=False)


def check_distill(r: Runner, ln: Line, argv: list[str], res: Result) -> None:
    """``domaindiff distill``: the teacher is a short fit's checkpoint, two iterations.

    ``--ckpt`` naming a placeholder (``TEACHER.ckpt``, a ``lightning_logs/...`` path) gets the
    ``last.ckpt`` of the short fit of the same ``--config``; the student written with ``--out``
    is what later lines that name that file load. A line naming the user's own files
    (``DIR/...``) runs as written and must refuse in one line (NEEDS_DATA).
    """
    plugin = _plugin_of_fit(argv) or "toy"
    teacher = r.ckpts.get(_config_of(argv) or "toy:demo")
    new: list[str] = []
    it = iter(range(len(argv)))
    for i in it:
        a = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else ""
        if a == "--ckpt" and not _needs_offline_missing(argv) and CKPT_PLACEHOLDER.search(nxt):
            if teacher is None:
                res.status, res.note = "FAIL", f"no README fit line trains the teacher {nxt}"
                return
            new += [a, str(teacher)]
            next(it)
        elif a == "--iterations" and nxt.isdigit():
            new += [a, "2"]
            next(it)
        else:
            new.append(a)
    shrink = list(FIT_SHRINK.get(plugin, []))
    if plugin == "trajectories" and "demo" in _config_of(argv):
        shrink += NBODY_SHRINK
    new += ["--trainer.limit_val_batches=0", *shrink]
    cwd = r.fresh_dir(ln.text[:40])
    _run_all(r, [new], cwd, res, need_ckpt=False)
    outs = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--out"]
    if res.status == "PASS" and outs:
        if not (cwd / outs[0]).is_file():
            res.status, res.note = "FAIL", f"the distill exited 0 but wrote no {outs[0]}"
        else:
            r.outputs[f"{plugin}:{outs[0]}"] = cwd / outs[0]
    elif res.status == "NEEDS_DATA" and outs:
        r.outputs_need_data[f"{plugin}:{outs[0]}"] = f"{ln.readme}:{ln.lineno}: {res.note}"


def check_demo(r: Runner, ln: Line, argv: list[str], res: Result) -> None:
    """Run a plugin demo with its own size flags made tiny."""
    mod = argv[2]
    cwd = r.fresh_dir(ln.text[:40])
    _run_all(r, [[*argv, *DEMO_SHRINK.get(mod, [])]], cwd, res, need_ckpt=False)
    if res.status == "PASS":
        outs = [a for i, a in enumerate(argv) if i > 0 and argv[i - 1] == "--out"]
        made = list((cwd / outs[0]).rglob("*")) if outs else []
        if outs and not made:
            res.status, res.note = "FAIL", f"the demo wrote nothing under {outs[0]}"
        else:
            res.note = f"{len(made)} files under {outs[0] if outs else cwd}"


def check_line(r: Runner, ln: Line) -> Result:
    """Plan and run one README line."""
    res = Result(ln.readme, ln.lineno, ln.text, "FAIL")
    argv = _strip_prefix(ln.argv)
    readme = ROOT / ln.readme
    if any(re.fullmatch(r"\[.*\]", a) for a in argv):
        res.note = "has an optional part in [brackets]: not a line a shell runs as written"
        argv = [a for a in argv if not re.fullmatch(r"\[.*\]", a)]
    if argv[0] == "make" or (argv[0] == "python" and "benchmarks/" in " ".join(argv[:3])) \
            or (argv[:4] == ["python", "-m", "pip", "install"] and "-e" in argv) \
            or (argv[:4] == ["python", "-m", "pip", "wheel"]
                and any(a.startswith("./") for a in argv)):  # builds from a checkout's folders
        res.status = "NEEDS_CHECKOUT"
        res.note = ("README says so nearby" if _says_checkout(readme, ln.lineno)
                    else "README does not say this needs a checkout")
        return res
    if argv[:4] == ["python", "-m", "pip", "install"]:
        res.status, res.note = "SETUP", "done by scripts/check_wheel_install.sh"
        return res
    if argv[0] == "domaindiff" and len(argv) > 1 and argv[1] == "fit":
        check_fit(r, ln, argv, res)
    elif "..." in argv:
        res.status = "ELIDED"
        res.note = "part of the line is elided with '...': not a line a shell runs as written"
    elif argv[0] == "domaindiff" and len(argv) > 1 and argv[1] == "distill":
        check_distill(r, ln, argv, res)
    elif argv[0] == "domaindiff" and len(argv) > 1 and argv[1] in ("eval", "sample"):
        check_eval(r, ln, argv, res)
    elif argv[:2] == ["python", "-m"] and argv[2].endswith(".demo"):
        check_demo(r, ln, argv, res)
    else:
        _run_all(r, [argv], r.fresh_dir(ln.text[:40]), res, need_ckpt=False)
    return res


def _order(lines: list[Line]) -> list[Line]:
    """Fits first (they make the checkpoints), then distills (their students), then the rest."""
    def rank(ln: Line) -> int:
        a = _strip_prefix(ln.argv)[:2]
        return {"fit": 0, "distill": 1}.get(a[1], 2) if a[:1] == ["domaindiff"] and a[1:] else 2
    return sorted(lines, key=rank)  # stable: README order within each group


def main(argv: list[str] | None = None) -> int:
    """Extract, run and report every README command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--venv", type=Path, default=Path("/tmp/wheelvenv"))
    ap.add_argument("--run-dir", type=Path, default=Path("/tmp/wheelrun"))
    ap.add_argument("--data", type=Path, default=Path("/tmp/wheeldata"))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/wheel_install_check.json")
    ap.add_argument("--timeout", type=float, default=420.0, help="seconds per command")
    ap.add_argument("--only", default="", help="regex: run only the lines that match")
    ap.add_argument("--install-log", type=Path, default=None, help="JSON of install timings")
    ap.add_argument("--merge", action="store_true",
                    help="keep the lines of an existing --out file that this run did not run")
    ap.add_argument("--budget", type=float, default=0.0,
                    help="seconds: lines not started by then are not run (listed as not_run; "
                         "with --merge their old rows stay); 0 = no limit")
    args = ap.parse_args(argv)
    if args.run_dir.resolve().is_relative_to(ROOT):
        ap.error(f"--run-dir {args.run_dir} is inside the repository; it must be outside it")
    shutil.rmtree(args.run_dir, ignore_errors=True)
    args.run_dir.mkdir(parents=True)
    r = Runner(args.venv, args.run_dir, args.data, args.timeout)
    every = [ln for rel in READMES if (ROOT / rel).is_file() for ln in extract(ROOT / rel, rel)]
    lines = [ln for ln in every if re.search(args.only, ln.text)] if args.only else every
    results: list[Result] = []
    seen: dict[str, Result] = {}
    t0 = time.perf_counter()
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    not_run: list[str] = []
    for ln in _order(lines):
        key = shlex.join(_strip_prefix(ln.argv))
        if args.budget and time.perf_counter() - t0 > args.budget and key not in seen:
            not_run.append(f"{ln.readme}:{ln.lineno}  {ln.text}")
            print(f"{'NOT RUN':<15} {'':>7}  {ln.readme}:{ln.lineno}  {ln.text[:90]} (budget)",
                  flush=True)
            continue
        if key in seen:
            first = seen[key]
            res = Result(ln.readme, ln.lineno, ln.text, first.status, [], 0.0,
                         f"same line as {first.readme}:{first.lineno}. {first.note}".strip())
        else:
            res = seen[key] = check_line(r, ln)
        res.when = when
        results.append(res)
        print(f"{res.status:<15} {res.seconds:6.1f}s  {ln.readme}:{ln.lineno}  {ln.text[:90]}",
              flush=True)
    results.sort(key=lambda x: (READMES.index(x.readme), x.lineno))
    _report(args, results, time.perf_counter() - t0, every, not_run)
    return 1 if any(x.status == "FAIL" for x in results) else 0


def _merge(results: list[Result], old: list[Result], current: list[Line]) -> list[Result]:
    """This run's rows plus the old rows of README lines it did not run, matched by text.

    READMEs change between runs, so an old row is kept only while its line is still in its
    README (with that line's current number); rows of lines that are gone are dropped.
    """
    ran = {(x.readme, x.line) for x in results}
    where: dict[tuple[str, str], list[int]] = {}
    for ln in current:
        where.setdefault((ln.readme, ln.text), []).append(ln.lineno)
    kept: list[Result] = []
    for x in old:
        key = (x.readme, x.line)
        if key in ran or not where.get(key):
            continue
        x.lineno = where[key].pop(0)
        kept.append(x)
    return sorted(results + kept, key=lambda x: (READMES.index(x.readme), x.lineno))


def _report(args: argparse.Namespace, results: list[Result], total: float,
            current: list[Line], not_run: list[str] | None = None) -> None:
    """Print the table and write the JSON atomically (``--merge``: with the old file's lines)."""
    install = json.loads(args.install_log.read_text()) if args.install_log else {}
    this_run: dict[str, int] = {}
    for x in results:
        this_run[x.status] = this_run.get(x.status, 0) + 1
    if args.merge and args.out.is_file():
        old = json.loads(args.out.read_text())
        install = install or old.get("install", {})
        results = _merge(results, [Result(**d) for d in old["lines"]], current)
    print(f"\n{'status':<15} {'secs':>6}  where / line")
    for x in results:
        print(f"{x.status:<15} {x.seconds:6.1f}  {x.readme}:{x.lineno}  {x.line[:100]}")
        if x.status in ("FAIL", "NEEDS_DATA") or "not" in x.note:
            print(f"{'':<24}-> {x.note[:300]}")
    counts: dict[str, int] = {}
    for x in results:
        counts[x.status] = counts.get(x.status, 0) + 1
    print("\n" + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    doc = {
        "what": "every README command line run in a venv holding only the wheels",
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs (shared), "
                   f"load {os.getloadavg()[0]:.1f}",
        "python": sys.version.split()[0],
        "settings": {"DOMAINDIFF_THREADS": "1", "DOMAINDIFF_DATA": str(args.data),
                     "run_dir": str(args.run_dir), "venv": str(args.venv),
                     "max_eval_steps": MAX_EVAL_STEPS},
        "install": install,
        "total_seconds": round(total, 1),
        "counts": counts,
        "this_run": {"only": args.only, "merge": args.merge, "budget_s": args.budget,
                     "counts": this_run},
        "not_run": not_run or [],
        "lines": [asdict(x) | {"seconds": round(x.seconds, 1)} for x in results],
    }
    from domaindiff.data import atomic_write_text  # the wheel's own atomic writer
    atomic_write_text(args.out, json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
