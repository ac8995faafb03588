# The two commands of the README. Both set up .venv first (a no-op when it is current); the demo
# needs no test dependencies.
.PHONY: setup demo test

setup:
	bash scripts/setup.sh

demo:
	SKINR1_DEV=0 bash scripts/setup.sh
	.venv/bin/skinr1 demo --out runs/demo

test: setup
	.venv/bin/python -m pytest -q --timeout=900
