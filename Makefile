# cardkit — the two quick-start commands are `make demo` and `make test`.
.PHONY: setup demo test lint bench clean

setup:
	bash .ci/setup

# The main job on the embedded default: a 300-record social security card batch on virtual readers, with the
# TEST keys of keys/test/ (never for real cards). Output (report, ledger, journal, card images) in out/demo.
demo: setup
	rm -rf out/demo
	.venv/bin/cardkit batch run applets/ssc/sample-batch.csv --profile ssc \
	    --keys keys/test/ssc.toml --allow-test-keys --out out/demo

lint:
	.venv/bin/ruff check cardkit tests benchmarks
	.venv/bin/mypy

test: setup lint
	.venv/bin/pytest -q -m "not slow"

bench: setup
	.venv/bin/python -m benchmarks

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache out
