# Tidings — `make run` serves the site, `make test` runs the suite. Both build the venv on demand.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000

export FLASK_APP := wsgi:app

.PHONY: venv run test bench screenshots

venv: $(VENV)/.installed

# Re-install only when a requirements file changes; the stamp records the last successful install.
$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -r requirements-dev.txt
	# The realtime layer, installed as an adopter would. "compat" puts the checkout on sys.path
	# (a .pth line) instead of an import hook, so another checkout's own copy wins in its tests.
	$(BIN)/pip install --no-deps -e . --config-settings editable_mode=compat
	touch $@

run: venv
	$(BIN)/flask db upgrade
	TIDINGS_BIND=$(HOST):$(PORT) $(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

test: venv
	scripts/test-services.sh
	scripts/browser-deps.sh
	$(BIN)/python -m pytest -q

bench: venv
	$(BIN)/python -m bench

# The pictures in docs/ (main pages, desktop and phone); tests never write them.
screenshots: venv
	scripts/browser-deps.sh
	$(BIN)/python scripts/screenshots.py
