"""MUTANTS.md from cargo-mutants outcomes: `bash scripts/mutants.sh report`.

OUT holds one directory per shard run by scripts/mutants.sh (`<pass>-<k>-of-<n>`), each with
cargo-mutants' `mutants.out/` (caught.txt, missed.txt, timeout.txt, unviable.txt). The section
"## What the survivors mean" of the MUTANTS.md in the working directory is hand-written and kept.
"""

from __future__ import annotations

import datetime
import re
import sys
from collections import defaultdict
from pathlib import Path

OUTCOMES = ("caught", "missed", "timeout", "unviable")
PASSES = {
    "core": "backup readers, format, key, names (cargo's unit tests + fuzz corpus replay)",
    "jobs": "claims and endings in src/jobs.rs (pytest: test_jobs.py, test_batch.py)",
    "schema": "migrations in src/schema/mod.rs (pytest: test_schema.py, test_compat.py)",
    "restore": "restores in src/backup/restore.rs (pytest: test_backup.py)",
}
KEPT = "## What the survivors mean"


def main(out: Path) -> str:
    # Per pass, each mutant's latest outcome: a later run (`<pass>-rerun`, after tests were
    # added for the survivors) overrides what the shards found.
    latest: dict[str, dict[str, str]] = defaultdict(dict)
    shards: dict[str, set[str]] = defaultdict(set)
    planned: dict[str, int] = {}
    runs = [d for d in out.iterdir() if (d / "mutants.out" / "caught.txt").exists()]
    for d in sorted(runs, key=lambda d: (d / "mutants.out" / "outcomes.json").stat().st_mtime):
        name, _, run = d.name.partition("-")
        m = re.fullmatch(r"(\d+)-of-(\d+)", run)
        if m:
            shards[name].add(m.group(1))
            planned[name] = int(m.group(2))
        for outcome in OUTCOMES:
            path = d / "mutants.out" / f"{outcome}.txt"
            if path.exists():
                for mutant in filter(None, path.read_text().splitlines()):
                    latest[name][mutant] = outcome
    found: dict[str, dict[str, list[str]]] = {
        name: {k: [m for m, o in mutants.items() if o == k] for k in OUTCOMES}
        for name, mutants in latest.items()
    }

    lines = [
        "# Mutation testing",
        "",
        "Produced by `bash scripts/mutants.sh core|sql` then `bash scripts/mutants.sh report` "
        f"on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC "
        "(cargo-mutants; each pass split in shards, round-robin, run one after another).",
        "A mutant is *caught* when a test fails against it, *missed* when every test passes, "
        "*unviable* when it does not compile.",
        "",
        "| pass | what kills mutants | shards run | caught | missed | timeout | unviable |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, what in PASSES.items():
        if name not in found:
            lines.append(f"| {name} | {what} | 0 | not run | | | |")
            continue
        n = {k: len(found[name][k]) for k in OUTCOMES}
        lines.append(
            f"| {name} | {what} | {len(shards[name])} of {planned.get(name, 0)} | {n['caught']} "
            f"| {n['missed']} | {n['timeout']} | {n['unviable']} |"
        )
    lines += ["", "## Survivors", ""]
    for name in PASSES:
        survivors = sorted(found[name]["missed"] + found[name]["timeout"]) if name in found else []
        if survivors:
            lines.append(f"### {name}")
            lines.append("")
            lines += [f"- `{s}`" for s in survivors]
            lines.append("")
    previous = Path("MUTANTS.md")
    if previous.exists() and KEPT in previous.read_text():
        lines.append(KEPT + previous.read_text().split(KEPT, 1)[1].rstrip("\n"))
    else:
        lines.append(KEPT)
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(main(Path(sys.argv[1])))
