"""The log sweep at its limits: trees deeper than any stack, directories swapped for other
directories below the sweep's window of open descriptors (issue 18, with issue 11's items)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import job_manager
from conftest import counted

DEEP = r"""
import os, resource, sys, threading, time, job_manager
root, depth = sys.argv[1], int(sys.argv[2])
fd = os.open(os.path.join(root, "dag_id=deep"), os.O_RDONLY | os.O_DIRECTORY)
for i in range(depth):
    os.mkdir("d", dir_fd=fd)
    nxt = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
    if i % 1000 == 999:  # an old log every 1,000 levels
        f = os.open("attempt=1.log", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=nxt)
        os.utime(f, (1, 1))
        os.close(f)
    os.close(fd)
    fd = nxt
os.close(fd)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
threading.stack_size(256 * 1024)
out = {}
def sweep():
    t = time.perf_counter()
    out["r"] = job_manager.cleanup_old_logs(root, 7).to_dict()
    out["s"] = time.perf_counter() - t
th = threading.Thread(target=sweep)
th.start()
th.join()
r = out["r"]
print(r["files"], r["error_count"], f"{out['s']:.2f}")
top = os.path.join(root, "dag_id=deep")
while os.path.isdir(os.path.join(top, "d")):
    d = os.path.join(top, "d")
    for name in os.listdir(d):
        if name == "d":
            os.rename(os.path.join(d, name), os.path.join(top, "next"))
        else:
            os.unlink(os.path.join(d, name))
    os.rmdir(d)
    if os.path.isdir(os.path.join(top, "next")):
        os.rename(os.path.join(top, "next"), d)
"""


def test_deep_trees_on_a_small_stack(tmp_path: Path, faults) -> None:  # type: ignore[no-untyped-def]
    depths = [10_000, 30_000] if faults.n(1, 2) > 1 else [10_000]
    timings = []
    not_deleted = errors_total = crashes = 0
    for depth in depths:
        root = tmp_path / f"logs{depth}"
        (root / "dag_id=deep").mkdir(parents=True)
        out = subprocess.run(
            [sys.executable, "-c", DEEP, str(root), str(depth)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        crashes += out.returncode != 0
        assert out.returncode == 0, out.stderr[-2000:]
        files, errors, seconds = out.stdout.split()
        not_deleted += depth // 1000 - int(files)
        errors_total += int(errors)
        assert (int(files), int(errors)) == (depth // 1000, 0)
        timings.append(f"{depth:,} levels in {seconds} s")
    faults.record(
        "log sweep of a tree deeper than any stack",
        "one directory per level, an old log every 1,000 levels, swept by a thread with a "
        "256 KiB stack under RLIMIT_NOFILE=64 (the old recursive sweep died of SIGSEGV at "
        f"9,000 levels on a 4 MiB stack): {', '.join(timings)}",
        len(depths),
        counted(old_logs_not_deleted=not_deleted, errors=errors_total, crashes=crashes),
    )


def test_symlinks_swapped_in_below_the_descriptor_window(tmp_path: Path, faults) -> None:  # type: ignore[no-untyped-def]
    """The sweep holds at most 32 directories open and reopens the others by name
    (O_NOFOLLOW, same device and inode): level 40 of an 80-level chain, swapped for a symlink
    to a look-alike tree outside while the sweep runs, never leads it there."""
    outside = tmp_path / "outside"
    old = time.time() - 30 * 86_400
    rounds = faults.n(10, 50)
    outside_deleted = 0
    refused = 0
    for r in range(rounds):
        root = tmp_path / f"logs{r}"
        level = root / "dag_id=chain"
        for i in range(80):
            level = level / f"l{i}"
            level.mkdir(parents=True)
            f = level / "attempt=1.log"
            f.write_text("x")
            os.utime(f, (old, old))
        # A look-alike of levels 40..79 outside the tree, with the same names.
        twin = outside / f"twin{r}"
        precious = []
        t_level = twin
        for i in range(40, 80):
            t_level = t_level / f"l{i}"
            t_level.mkdir(parents=True)
            f = t_level / "attempt=1.log"
            f.write_text("keep")
            os.utime(f, (old, old))
            precious.append(f)
        target = root.joinpath("dag_id=chain", *[f"l{i}" for i in range(41)])
        stop = threading.Event()

        def saboteur(
            target: Path = target, twin: Path = twin, stop: threading.Event = stop
        ) -> None:
            rng = random.Random(str(target))
            aside = target.with_name("aside")
            while not stop.is_set():
                try:
                    target.rename(aside)
                    target.symlink_to(twin / "l40", target_is_directory=True)
                    time.sleep(rng.random() / 2000)
                    target.unlink()
                    aside.rename(target)
                except OSError:
                    pass

        t = threading.Thread(target=saboteur)
        t.start()
        try:
            report = job_manager.cleanup_old_logs(root, 7)
        finally:
            stop.set()
            t.join()
        refused += report.error_count
        outside_deleted += sum(not f.exists() for f in precious)
        for f in precious:
            assert f.exists(), "a file outside the tree was deleted through a swapped-in symlink"
    faults.record(
        "log sweep while a directory below its window of open descriptors becomes a symlink",
        f"{rounds} sweeps of an 80-level chain (deeper than the 32 directories it holds open) "
        "while a thread swaps level 40 for a symlink to a look-alike tree of old logs outside; "
        f"{refused} entries reported as unreadable or replaced",
        rounds,
        counted(
            "all 40 old files of the look-alike still exist",
            files_outside_the_tree_deleted=outside_deleted,
        ),
    )
