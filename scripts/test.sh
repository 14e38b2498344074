#!/usr/bin/env bash
# Every check and every test: `bash scripts/test.sh` (extra arguments go to pytest).
#
# Builds and installs the wheel, then: cargo fmt --check, cargo clippy -D warnings, cargo test,
# ruff, and pytest against a real PostgreSQL. Without $JOB_MANAGER_TEST_DSN (a superuser DSN
# that may CREATE DATABASE) the tests start a throwaway cluster of their own.
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"

say "cargo fmt --check"
cargo fmt --check
say "cargo clippy -- -D warnings"
cargo clippy --all-targets -- -D warnings
say "cargo test (the core, without Python)"
cargo test --no-default-features
say "ruff"
ruff check .
ruff format --check .
say "pytest"
python -m pytest "$@"
