# The two commands of the README. Both set up .venv first (a no-op when it is current).
.PHONY: setup demo test

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/skinr1 demo --out runs/demo

test: setup
	.venv/bin/python -m pytest -q --timeout=900
