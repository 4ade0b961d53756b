"""A fresh install from the wheels: ``pip wheel ./core ./plugins/*``, a new venv, no checkout.

CI runs offline, so the new venv borrows the *third-party* dependencies from the test venv
through one plain path line in a ``.pth`` file (a plain line adds the directory to ``sys.path``
without running that directory's ``.pth`` hooks, so the checkout's editable installs stay off);
the domaindiff distributions come from the wheels alone. Every command runs from an empty
directory outside the repository, as a pip user would. ``scripts/check_wheel_install.sh`` is the
full check (a venv with the dependencies pip resolves, every README line).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "core", *(ROOT / "plugins" / p
                            for p in ("graphs", "timeseries", "trajectories", "medical"))]
PACKAGES = ["domaindiff", "domaindiff_graphs", "domaindiff_timeseries", "domaindiff_trajectories",
            "domaindiff_medical"]
IGNORE = ("build", "*.egg-info", "__pycache__", "dist")


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory) -> tuple[Path, dict[str, str], Path]:
    """(venv, environment, empty working directory) with the freshly built wheels installed."""
    tmp = tmp_path_factory.mktemp("wheels")
    copies = []
    for src in SOURCES:  # copies: the build leaves no build/ folders in the working tree
        dst = tmp / "src" / src.name
        shutil.copytree(src, dst, symlinks=True, ignore=shutil.ignore_patterns(*IGNORE))
        copies.append(str(dst))
    wheels = tmp / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(wheels), *copies],
                   check=True, capture_output=True, text=True, timeout=600)
    built = sorted(wheels.glob("*.whl"))
    assert len(built) == len(SOURCES), [w.name for w in built]
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    py = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q",
                    "--no-deps", "--no-index", *map(str, built)],
                   check=True, capture_output=True, text=True, timeout=600)
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], check=True, capture_output=True, text=True).stdout
    Path(site.strip(), "zz_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=f"{venv / 'bin'}:{env.get('PATH', '')}", VIRTUAL_ENV=str(venv),
               DOMAINDIFF_THREADS="1", OMP_NUM_THREADS="1", MPLBACKEND="Agg",
               DOMAINDIFF_DATA=str(tmp / "data"))
    cwd = tmp / "user"
    cwd.mkdir()
    return venv, env, cwd


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    res = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"{' '.join(argv)} exited {res.returncode}: {res.stderr[-1500:]}"
    return res


@pytest.mark.slow
def test_packages_come_from_the_wheels_not_the_checkout(wheel_venv):
    venv, env, cwd = wheel_venv
    code = ("import importlib, json; print(json.dumps({m: importlib.import_module(m).__file__ "
            f"for m in {PACKAGES!r}}}))")
    files = json.loads(_run([str(venv / "bin" / "python"), "-c", code], env, cwd).stdout)
    for mod, f in files.items():
        path = Path(f).resolve()
        assert path.is_relative_to(venv.resolve()), f"{mod} imported from {path}, not the venv"
        assert not path.is_relative_to(ROOT), f"{mod} imported from the checkout: {path}"


@pytest.mark.slow
def test_console_script_lists_plugins_and_shipped_configs_by_name(wheel_venv):
    venv, env, cwd = wheel_venv
    dd = str(venv / "bin" / "domaindiff")
    out = _run([dd, "plugins"], env, cwd).stdout
    for p in ("graphs", "timeseries", "trajectories", "medical"):
        assert p in out, out
    assert "error" not in out.lower(), out
    configs = _run([dd, "configs", "graphs"], env, cwd).stdout
    assert "graphs:community_small" in configs and str(venv) in configs, configs
    assert str(ROOT) not in configs, configs
    cfg = _run([dd, "fit", "--config", "graphs:community_small", "--print_config"], env, cwd).stdout
    assert "domaindiff_graphs" in cfg and "seed_everything" in cfg


@pytest.mark.slow
def test_a_two_step_fit_and_eval_run_from_the_wheels(wheel_venv):
    venv, env, cwd = wheel_venv
    dd = str(venv / "bin" / "domaindiff")
    _run([dd, "fit", "--config", "toy:demo", "--trainer.max_steps=2",
          "--trainer.limit_val_batches=0", "--data.init_args.num_train=256"], env, cwd)
    (ckpt,) = cwd.rglob("last.ckpt")
    _run([dd, "eval", "toy", f"ckpt={ckpt}", "sampler=ddim", "steps=5", "num_samples=64",
          "nll_samples=4"], env, cwd)
    metrics = list(cwd.rglob("metrics_*.json"))
    assert metrics, sorted(p.name for p in cwd.rglob("*"))
    assert json.loads(metrics[0].read_text()).get("nfe") is not None
