#!/usr/bin/env bash
# A pip user's install, from wheels only: build the wheels of core and the plugins, make a fresh
# venv, install torch first (the Makefile's pin) and then the wheels, and run every command line
# of the READMEs from an empty directory outside the repository
# (benchmarks/wheel_install_check.py prints PASS/FAIL per line and writes
# benchmarks/results/wheel_install_check.json atomically).
#
#   bash scripts/check_wheel_install.sh [--only REGEX] [--timeout SECONDS] [--budget SECONDS] [--merge]
#
# --only runs the README lines matching REGEX; --merge keeps the rows of the other lines from the
# existing JSON (matched by line text); --budget stops starting lines after that many seconds and
# still writes the JSON (lines not started are listed as not_run).
#
# Environment: WHEELS (/tmp/wheels), WHEEL_VENV (/tmp/wheelvenv), WHEEL_RUN (/tmp/wheelrun),
# DOMAINDIFF_DATA (/tmp/wheeldata), TORCH ("torch==2.13.0", as the Makefile), BUILD_PY (the
# interpreter that builds the wheels: .venv/bin/python if present, else python3), REUSE_VENV=1
# to keep an existing venv (only reinstall the wheels).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHEELS="${WHEELS:-/tmp/wheels}"
VENV="${WHEEL_VENV:-/tmp/wheelvenv}"
RUN="${WHEEL_RUN:-/tmp/wheelrun}"
DATA="${DOMAINDIFF_DATA:-/tmp/wheeldata}"
TORCH="${TORCH:-torch==2.13.0}"
BUILD_PY="${BUILD_PY:-$ROOT/.venv/bin/python}"
[ -x "$BUILD_PY" ] || BUILD_PY=python3
LOG="$(mktemp -d)/install.json"

now() { date +%s.%N; }
secs() { python3 -c "print(round($2 - $1, 1))"; }

t0=$(now)
rm -rf "$WHEELS" && mkdir -p "$WHEELS"
(cd "$ROOT" && "$BUILD_PY" -m pip wheel -q --no-deps -w "$WHEELS" ./core ./plugins/*)
t1=$(now)
if [ "${REUSE_VENV:-0}" != 1 ] || [ ! -x "$VENV/bin/python" ]; then
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q "$TORCH"
fi
t2=$(now)
"$VENV/bin/python" -m pip install -q --force-reinstall --no-deps "$WHEELS"/*.whl
"$VENV/bin/python" -m pip install -q "$WHEELS"/*.whl
t3=$(now)
# the venv holds the wheels, not the checkout
"$VENV/bin/python" - "$ROOT" <<'PY'
import sys, importlib, pathlib
root = pathlib.Path(sys.argv[1]).resolve()
for m in ("domaindiff", "domaindiff_graphs", "domaindiff_timeseries", "domaindiff_trajectories",
          "domaindiff_medical"):
    f = pathlib.Path(importlib.import_module(m).__file__).resolve()
    if f.is_relative_to(root):
        sys.exit(f"{m} is imported from the checkout ({f}), not from the wheel")
PY
cat > "$LOG" <<JSON
{"wheels": $(ls "$WHEELS" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().split()))'),
 "build_wheels_s": $(secs "$t0" "$t1"), "venv_and_torch_s": $(secs "$t1" "$t2"),
 "wheels_and_deps_s": $(secs "$t2" "$t3"), "torch": "$TORCH",
 "reused_venv": $([ "${REUSE_VENV:-0}" = 1 ] && echo true || echo false)}
JSON
cat "$LOG"
mkdir -p "$DATA"
cd /tmp
exec "$VENV/bin/python" "$ROOT/benchmarks/wheel_install_check.py" --venv "$VENV" --run-dir "$RUN" \
    --data "$DATA" --install-log "$LOG" --out "$ROOT/benchmarks/results/wheel_install_check.json" "$@"
