# cardkit — the two quick-start commands are `make demo` and `make test`.
.PHONY: setup demo test lint bench clean

setup:
	bash .ci/setup

demo: setup
	.venv/bin/cardkit demo

lint:
	.venv/bin/ruff check cardkit tests benchmarks
	.venv/bin/mypy

test: setup lint
	.venv/bin/pytest -q -m "not slow"

bench: setup
	.venv/bin/python -m benchmarks

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache out
