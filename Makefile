# Two commands do all the set-up on a fresh machine:
#   make workbook   run every notebook headless on the default data (creates the environment if missing)
#   make test       unit tests + every notebook through papermill at the tiny preset
# and `make lab` opens JupyterLab on the notebooks.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PRESET ?= cpu
RUN    ?= runs/workbook
STEPS  ?=
MINUTES ?=
DEBIAN_DATA := espeak-ng sonic-pi-samples alsa-utils opus-tools \
	asterisk-core-sounds-en-g722 asterisk-core-sounds-es-g722 asterisk-core-sounds-fr-g722 \
	asterisk-core-sounds-it-g722 asterisk-core-sounds-ru-g722
# OpenMP threads that sleep rather than spin while waiting: on a machine whose cores are shared with other work,
# spinning made 2-thread torch 2-12x slower (see bench/README.md). `make workbook` times this machine instead
# (lib.wait_policy: spinning trains about 1.4x faster on quiet cores). Set it yourself to override both.
ifeq ($(origin OMP_WAIT_POLICY),undefined)
WORKBOOK_WAIT_POLICY := auto
OMP_WAIT_POLICY := PASSIVE
else
WORKBOOK_WAIT_POLICY := $(OMP_WAIT_POLICY)
endif
export OMP_WAIT_POLICY

.PHONY: workbook test lab env data-packages browser-packages bench clean-runs

env: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml .ci/torchaudio-check.py
	@$(PYTHON) -c "import shutil; f = shutil.disk_usage('.').free / 2**30; f < 3 and print(f'WARNING: {f:.1f} GB free here; the environment needs about 2 GB (about 6 GB where pip takes a CUDA build of torch)')"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	$(PY) .ci/torchaudio-check.py
	$(PY) -m pip install --no-deps -e .
	touch $@

# Debian packages: real recordings, recorded human speech (the asterisk voice prompts) and synthetic speech for the
# default corpus (without them it does with what is there, and notebook 01 says so), opusenc/opusdec for the Opus
# baseline as users run it (skipped, with the reason, without them), and Chromium for the browser test of the
# listening widget (skipped, with the reason, without it).
data-packages:
	@sh .ci/apt-install.sh "the default corpus does without them (notebook 01 says which sources it used), and the opusenc baseline is skipped" $(DEBIAN_DATA)

browser-packages:
	@sh .ci/apt-install.sh "the browser test will be skipped" chromium

workbook: env data-packages
	OMP_WAIT_POLICY=$(WORKBOOK_WAIT_POLICY) $(PY) -m lib.runner --preset $(PRESET) --run-dir $(RUN) --figures figures --data data/default $(if $(STEPS),--steps $(STEPS)) $(if $(MINUTES),--minutes $(MINUTES))

test: env data-packages browser-packages
	$(PY) -m pytest

lab: env
	$(VENV)/bin/jupyter lab notebooks/

bench: env
	$(PY) bench/speed.py

clean-runs:
	rm -rf runs
