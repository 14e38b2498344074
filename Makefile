.DEFAULT_GOAL := help

.PHONY: help demo test build lint fmt test-rust

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

demo: ## build, start a throwaway PostgreSQL if none is configured, run the demo
	bash scripts/demo.sh

test: ## every check and test (what CI runs)
	bash scripts/test.sh

build: ## the release wheel in dist/
	PATH="$(CURDIR)/.venv/bin:$$PATH" .venv/bin/maturin build --release --zig --compatibility manylinux2014 --out dist

test-rust: ## the core's Rust tests, without Python
	cargo test --no-default-features

lint: ## cargo fmt --check, clippy -D warnings, ruff
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

fmt: ## format Rust and Python
	cargo fmt
	.venv/bin/ruff format .
