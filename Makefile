# The two commands of the README:
#   make demo   set up, then run the main job on the embedded example
#   make test   set up, then run the whole test suite
.PHONY: setup demo test

setup: .venv/.lwaftr-setup

.venv/.lwaftr-setup: pyproject.toml requirements.lock scripts/setup.sh
	bash scripts/setup.sh

demo: setup
	.venv/bin/lwaftr demo

test: setup
	.venv/bin/python -m pytest -q
