# Two entry points: `make demo` (the main job) and `make test`. Both create .venv if missing.
PY := .venv/bin/python
VENV_STAMP := .venv/.sdekit-installed

.PHONY: demo test venv bench clean

$(VENV_STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(VENV_STAMP)

venv: $(VENV_STAMP)

demo: $(VENV_STAMP)
	.venv/bin/sdekit demo

test: $(VENV_STAMP)
	$(PY) -m pytest

bench: $(VENV_STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	-$(PY) -m pip install -q --no-deps k-diffusion torchdiffeq torchsde trampoline
	nice -n 10 $(PY) benchmarks/run_all.py

clean:
	rm -rf .venv build *.egg-info
