# Sourced by scripts/demo.sh, scripts/test.sh and bench/run.sh: makes sure everything the project
# needs is here, then builds the release wheel and installs it into .venv.
#
#   - Rust (cargo) must be installed (https://rustup.rs); everything else is installed here:
#   - Debian packages when missing and we are root: python3-venv, PostgreSQL server binaries,
#     zstd, strace, pgbouncer and openssl (the network tests: PgBouncer in front of the test cluster, TLS
#     certificates made at test time), chromium (the Airflow UI tests, through Playwright);
#   - .venv with the tools of requirements-dev.txt (through uv, from PyPI);
#   - the wheel, built exactly as the Dockerfile's build stage does (maturin build --release
#     --zig --compatibility manylinux2014: a glibc 2.17 abi3 wheel).

set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

apt_install() {
    if [[ $(id -u) -ne 0 ]]; then
        echo "missing: $*; install these Debian packages (sudo apt-get install $*) and rerun" >&2
        exit 1
    fi
    say "installing Debian packages: $*"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! command -v cargo >/dev/null; then
    echo "cargo not found: install Rust with rustup (https://rustup.rs) and rerun" >&2
    exit 1
fi
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [[ -z ${PG_BINDIR:-} ]] \
    && [[ -z ${JOB_MANAGER_TEST_DSN:-} ]]; then
    apt_install postgresql
fi
# zstd and gzip: the documented psql restores of compressed backups (`zstd -dc FILE | psql`).
command -v zstd >/dev/null || apt_install zstd
# strace: tests/test_backup_files.py reads the system calls that make a backup durable.
command -v strace >/dev/null || apt_install strace
if [[ -z ${JOB_MANAGER_TEST_DSN:-} ]]; then
    missing=()
    command -v pgbouncer >/dev/null || [[ -x /usr/sbin/pgbouncer ]] || missing+=(pgbouncer)
    command -v openssl >/dev/null || missing+=(openssl)
    # The Celery broker of tests/test_airflow_stack.py (docker-compose.yml's redis service).
    [[ -x /usr/bin/redis-server ]] || missing+=(redis-server)
    if [[ ${#missing[@]} -gt 0 ]]; then apt_install "${missing[@]}"; fi
fi
# chromium: the Airflow UI tests drive Debian's browser headless through Playwright
# (tests/test_airflow_ui.py); Playwright's own browser download is not used.
[[ -x /usr/bin/chromium ]] || apt_install chromium
if [[ ! -x $PY ]]; then
    say "creating .venv"
    python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$VENV"; }
fi
if [[ ! -x $VENV/bin/uv ]]; then
    "$PY" -m pip install -q --disable-pip-version-check uv
fi
uv_install() { "$VENV/bin/uv" pip install -q --python "$PY" "$@"; }
uv_install -r requirements-dev.txt

say "building the wheel (maturin build --release --zig --compatibility manylinux2014)"
rm -f dist/job_manager-*.whl
# manylinux2014 (glibc 2.17): the wheel installs into any Airflow image, not only where it was
# built. maturin finds zig through `python -m ziglang`, so the venv's python comes first.
PATH="$VENV/bin:$PATH" "$VENV/bin/maturin" build --release --zig --compatibility manylinux2014 \
    --out dist >&2
uv_install --reinstall --no-deps dist/job_manager-*.whl
export PATH="$VENV/bin:$PATH"
