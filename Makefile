# Two commands do all the set-up on a fresh machine:
#   make workbook   run every notebook headless on the default data (creates the environment if missing)
#   make test       unit tests + every notebook through papermill at the tiny preset
# and `make lab` opens JupyterLab on the notebooks.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PRESET ?= cpu
RUN    ?= runs/workbook
DEBIAN_DATA := espeak-ng sonic-pi-samples alsa-utils

.PHONY: workbook test lab env data-packages bench clean-runs

env: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps -e .
	touch $@

# Real recordings and speech for the default corpus; without them it is synthesised (and says so).
data-packages:
	@if command -v espeak-ng >/dev/null && [ -d /usr/share/sonic-pi/samples ] && [ -d /usr/share/sounds/alsa ]; then \
	  echo "Debian data packages present ($(DEBIAN_DATA))"; \
	elif command -v apt-get >/dev/null && { [ "$$(id -u)" = 0 ] || sudo -n true 2>/dev/null; }; then \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo "sudo -n"); \
	  ($$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(DEBIAN_DATA) >/dev/null) \
	  || echo "WARNING: apt-get could not install $(DEBIAN_DATA); the default corpus will be synthesised audio."; \
	else \
	  echo "NOTE: apt-get is not usable here (no root/sudo); the default corpus will be synthesised audio."; \
	  echo "      For real recordings and speech: sudo apt-get install $(DEBIAN_DATA)"; \
	fi

workbook: env data-packages
	$(PY) -m lib.runner --preset $(PRESET) --run-dir $(RUN) --figures figures --data data/default

test: env data-packages
	$(PY) -m pytest

lab: env
	$(VENV)/bin/jupyter lab notebooks/

bench: env
	$(PY) bench/speed.py

clean-runs:
	rm -rf runs
