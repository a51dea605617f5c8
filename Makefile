# Each target creates .venv when it is missing. torch is installed first and pinned to the
# CPU build this machine carries on disk; pyproject only asks for torch>=2.3, which it satisfies.
PY      := .venv/bin/python
PIP     := .venv/bin/pip
TORCH   ?= torch==2.13.0
PROFILE ?= default

.PHONY: setup run test bench lint clean app

.venv/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[all,test]"
	touch $@

setup: .venv/.installed

run: setup
	.venv/bin/surrogate run cases/lorenz96_mno.yaml --profile $(PROFILE)

test: setup
	.venv/bin/ruff check .
	$(PY) -m pytest -q

app: setup
	.venv/bin/surrogate app

bench: setup
	$(PY) benchmarks/lorenz96.py

lint: setup
	.venv/bin/ruff check .

clean:
	rm -rf .venv
