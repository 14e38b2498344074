#!/usr/bin/env bash
# Mutation testing of the modules that guard data, and MUTANTS.md from the outcomes.
#
#   bash scripts/mutants.sh core      # backup readers, format, key, file names: cargo's own tests
#   bash scripts/mutants.sh sql       # claims, endings, migrations, restores: pytest as oracle
#   bash scripts/mutants.sh rerun     # the survivors again, after tests were added for them
#   bash scripts/mutants.sh report    # MUTANTS.md from every outcome under $MUTANTS_OUT
#
# Needs cargo-mutants (`cargo install --locked cargo-mutants`) and, for `sql`, the venv that
# scripts/test.sh builds (.venv, with the wheel's dependencies and pytest). Slow: minutes per
# ten mutants; not part of the test command. Environment:
#   MUTANTS_OUT    where outcomes go (default target/mutants); runs add to it, shard by shard
#   MUTANTS_SHARDS split each run into this many shards run one after another (default 1)
#   MUTANTS_LOCK   a file to flock around each shard (lets other heavy jobs in between)
#   MUTANTS_ARGS   more cargo-mutants arguments (e.g. --in-place in a scratch worktree)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${MUTANTS_OUT:-target/mutants}
SHARDS=${MUTANTS_SHARDS:-1}

run() { # name, cargo-mutants arguments...
    local name=$1
    shift
    for ((k = 0; k < SHARDS; k++)); do
        local dir="$OUT/$name-$k-of-$SHARDS"
        [[ -f $dir/mutants.out/outcomes.json ]] && grep -q '"end_time": *"' "$dir/mutants.out/outcomes.json" && continue
        mkdir -p "$dir"
        # The unmutated tree is tested once per pass (a failing baseline stops the pass).
        local baseline=run
        ((k > 0)) && baseline=skip
        local rc=0
        ${MUTANTS_LOCK:+flock "$MUTANTS_LOCK"} cargo mutants --no-shuffle --shard "$k/$SHARDS" \
            --sharding round-robin --baseline "$baseline" -o "$dir" ${MUTANTS_ARGS:-} "$@" || rc=$?
        # 2: mutants missed, 3: timeouts (what the report is for); 4: the baseline failed.
        if ((rc != 0 && rc != 2 && rc != 3)); then
            echo "cargo mutants exited $rc: see $dir/mutants.out/log" >&2
            return 1
        fi
    done
}

# Pure Rust that decides what a backup file may contain: killed by the unit tests and the
# replay of the fuzzers' corpora (tests/fuzz_corpus.rs).
core_pass() { # run name, cargo-mutants selection...
    run "$1" --no-default-features --test-workspace=false --timeout 180 \
        -f src/backup/files.rs -f src/backup/format.rs -f src/backup/key.rs \
        -f src/backup/reader.rs -f src/backup/pgdump.rs -f src/backup/grammar.rs \
        "${@:2}" -- --lib --test fuzz_corpus
}

# The SQL-bound passes: the pytest files that exercise the code are the oracle, run against
# the mutant's own extension (tests/python_oracle.rs). Extra arguments select mutants.
jobs_pass() { # run name, cargo-mutants selection...
    JOB_MANAGER_ORACLE_TESTS="tests/test_jobs.py tests/test_batch.py" \
        run "$1" --no-default-features --test-workspace=false --timeout 300 -f src/jobs.rs \
        "${@:2}" -- --test python_oracle -- --ignored
}
schema_pass() {
    JOB_MANAGER_ORACLE_TESTS="tests/test_schema.py tests/test_compat.py" \
        run "$1" --no-default-features --test-workspace=false --timeout 300 \
        -f src/schema/mod.rs "${@:2}" -- --test python_oracle -- --ignored
}
restore_pass() {
    JOB_MANAGER_ORACLE_TESTS="tests/test_backup.py" \
        run "$1" --no-default-features --test-workspace=false --timeout 300 \
        -f src/backup/restore.rs "${@:2}" -- --test python_oracle -- --ignored
}
export JOB_MANAGER_ORACLE_PYTHON=${JOB_MANAGER_ORACLE_PYTHON:-$PWD/.venv/bin/python}

case ${1:-} in
core)
    core_pass core
    ;;
sql)
    # Claims and endings whose wrong answers lose or duplicate jobs; every migration step.
    jobs_pass jobs --re ' in (claim|end_jobs|check_unique_ids|check_older_than)$' \
        --re 'replace (claim|end_jobs|reset_stuck_jobs|check_unique_ids|check_older_than) '
    schema_pass schema
    restore_pass restore
    ;;
rerun)
    (($# > 1)) || set -- rerun core jobs schema restore
    # A pass's survivors (missed or timed out) again, against today's tests: the report takes
    # each mutant's latest outcome. `rerun core`, `rerun jobs schema`; every pass by default.
    for pass in "${@:2}"; do
        selection=()
        while read -r mutant; do
            selection+=(--re "^$(python3 -c 'import re, sys; print(re.escape(sys.argv[1]))' "$mutant")\$")
        done < <(cat "$OUT/$pass"-*-of-*/mutants.out/{missed,timeout}.txt 2>/dev/null | sort -u)
        if ((${#selection[@]})); then
            SHARDS=1 "${pass}_pass" "$pass-rerun" "${selection[@]}"
        fi
    done
    ;;
report)
    python3 scripts/mutants_report.py "$OUT" > MUTANTS.md.new && mv MUTANTS.md.new MUTANTS.md
    ;;
*)
    sed -n '2,16p' "$0"
    exit 2
    ;;
esac
