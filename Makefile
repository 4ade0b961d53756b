# domaindiff: the two commands are `make demo` and `make test`.
#
# TORCH picks the torch build installed first. On the CPU machines of this project the local
# wheel torch==2.13.0 is used; an unpinned torch would pull several GB of CUDA packages.
# Override on a GPU machine, e.g. `make install TORCH="torch==2.13.0 --index-url <your index>"`.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PLUGINS ?= graphs timeseries trajectories medical
DEMO_OUT ?= demo_out
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.domaindiff-installed

.PHONY: install demo test lint bench clean $(addprefix demo-,toy $(PLUGINS))

install: $(STAMP)

$(STAMP): core/pyproject.toml $(wildcard plugins/*/pyproject.toml) pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e "core[test]" $(foreach p,$(PLUGINS),-e "plugins/$(p)[test]") "pytest>=8" "ruff>=0.6" "mypy>=1.8"
	$(VENV)/bin/domaindiff plugins
	touch $@

# Train and sample every plugin on its offline default (a few minutes each on 2 CPU cores),
# print each domain's metrics and write plots under $(DEMO_OUT)/<plugin>/.
demo: install demo-toy $(addprefix demo-,$(PLUGINS))
	@echo "demo outputs (metrics JSON and PNG plots) are in $(DEMO_OUT)/"

demo-toy: install
	@echo "== demo: toy"
	$(PY) -m domaindiff.toy.demo --out $(DEMO_OUT)/toy

$(addprefix demo-,$(PLUGINS)): demo-%: install
	@if [ -f plugins/$*/domaindiff_$*/demo.py ]; then \
		echo "== demo: $*"; $(PY) -m domaindiff_$*.demo --out $(DEMO_OUT)/$*; \
	else \
		echo "== demo: $* has no demo yet (plugins/$*/domaindiff_$*/demo.py missing): skipped"; \
	fi

test: install
	$(PY) -m pytest tests -q -p no:randomly

lint: install
	$(VENV)/bin/ruff check core plugins tests benchmarks
	$(VENV)/bin/mypy core/domaindiff

bench: install
	$(PY) benchmarks/core_samplers.py

clean:
	rm -rf $(DEMO_OUT) lightning_logs outputs multirun .pytest_cache
