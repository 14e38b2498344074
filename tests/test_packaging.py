"""The wheel and the sdist as an image builder gets them: a manylinux2014 (glibc 2.17) abi3
wheel that installs into clean venvs of the oldest and newest Python on the machine, metadata
that twine accepts, and an sdist that holds what a build needs and nothing else."""

from __future__ import annotations

import glob
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import job_manager
import pytest
from conftest import ROOT

VENV_BIN = Path(sys.executable).parent
MINIMUM = (3, 10)


def wheel() -> Path:
    wheels = sorted((ROOT / "dist").glob("job_manager-*.whl"))
    assert len(wheels) == 1, f"expected the one wheel scripts/bootstrap.sh builds: {wheels}"
    return wheels[0]


def interpreters() -> dict[tuple[int, int], str]:
    """CPython interpreters on this machine (PATH, /usr/bin, pyenv's versions), by version."""
    found: dict[tuple[int, int], str] = {}
    candidates = [shutil.which(f"python3.{m}") or "" for m in range(10, 16)]
    candidates += glob.glob("/usr/bin/python3.1[0-9]")
    candidates += glob.glob(str(Path.home() / ".pyenv/versions/3.*/bin/python3.[0-9]*"))
    for exe in candidates:
        if not re.fullmatch(r"python3\.\d+", Path(exe).name):
            continue
        out = subprocess.run(
            [exe, "-c", "import sys; print(sys.version_info[0], sys.version_info[1])"],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode == 0:
            major, minor = map(int, out.stdout.split())
            if (major, minor) >= MINIMUM:
                found.setdefault((major, minor), exe)
    return found


def test_the_wheel_is_manylinux2014_abi3() -> None:
    path = wheel()
    assert re.search(r"-cp310-abi3-.*manylinux_2_17_x86_64\.whl$", path.name), path.name
    out = subprocess.run(
        [str(VENV_BIN / "auditwheel"), "show", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "manylinux_2_17_x86_64" in " ".join(out.split()), out


def test_the_metadata_passes_twine_check() -> None:
    out = subprocess.run(
        [str(VENV_BIN / "twine"), "check", "--strict", str(wheel())],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "PASSED" in out.stdout


def test_one_version_everywhere() -> None:
    cargo = re.search(r'(?m)^version = "([^"]+)"', (ROOT / "Cargo.toml").read_text())[1]
    assert job_manager.__version__ == cargo
    assert f"job_manager-{cargo}-" in wheel().name
    out = subprocess.run(
        [sys.executable, "-m", "job_manager", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.startswith(f"job_manager {cargo} ")


def install_and_import(python: str, venv: Path, target: str) -> str:
    uv = str(VENV_BIN / "uv")
    subprocess.run([uv, "venv", "-q", "--python", python, str(venv)], check=True)
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), target],
        check=True,
    )
    return subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import sys, job_manager; from job_manager import JobManager; "
            "JobManager('postgresql://u@127.0.0.1:1/db'); "
            "print(job_manager.__version__, sys.version_info[:2])",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_the_wheel_installs_on_the_oldest_and_newest_python(tmp_path: Path) -> None:
    found = interpreters()
    if MINIMUM not in found:
        pytest.skip(f"no Python {MINIMUM} on this machine to test the oldest supported version")
    for version in sorted({MINIMUM, max(found)}):
        out = install_and_import(found[version], tmp_path / f"py{version[1]}", str(wheel()))
        assert out.startswith(job_manager.__version__), out
        assert f"({version[0]}, {version[1]})" in out


@pytest.mark.slow
def test_the_sdist_holds_what_a_build_needs_and_builds(tmp_path: Path) -> None:
    subprocess.run(
        [str(VENV_BIN / "maturin"), "sdist", "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    (sdist,) = tmp_path.glob("job_manager-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = [n.split("/", 1)[1] for n in tar.getnames() if "/" in n]
    for needed in (
        "LICENSE",
        "Cargo.toml",
        "Cargo.lock",
        "pyproject.toml",
        "src/schema/migrations/V1__baseline.sql",
        "src/backup/reader.rs",
        "python/job_manager/_internal.pyi",
        "python/job_manager/py.typed",
        "python/job_manager/__init__.py",
    ):
        assert needed in names, needed
    for unwanted in ("tests/", "bench/", "fuzz/", "dags/", "scripts/", "BENCHMARKS.json"):
        assert not any(n.startswith(unwanted) for n in names), unwanted
    out = install_and_import(sys.executable, tmp_path / "from-sdist", str(sdist))
    assert out.startswith(job_manager.__version__)


def test_the_native_module_links_no_openssl() -> None:
    """TLS is rustls compiled in: the extension needs only the C library, never libssl or
    libcrypto, so any image connects whatever OpenSSL (or none) it has."""
    import job_manager._internal as native

    out = subprocess.run(
        ["ldd", native.__file__], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    needed = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert not [n for n in needed if "ssl" in n or "crypto" in n], needed
    assert any(n.startswith("libc.so") for n in needed), needed
