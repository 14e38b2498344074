"""Every guarantee README.md and RELIABILITY.md state is mapped to tests that would fail without
it (tests/claims.toml), and the mapping follows the documents: a quote edited out of its
document, a test renamed or removed, or RELIABILITY.md's section left behind fails here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import claimmap
import pytest

CLAIMS = claimmap.load()


def test_every_quote_is_still_in_its_document() -> None:
    # RELIABILITY.md's own section quotes every claim: look everywhere but there.
    docs = {
        doc: claimmap.squeeze(
            claimmap.without_section((claimmap.ROOT / doc).read_text(encoding="utf-8"))
        )
        for doc in {claim.doc for claim in CLAIMS}
    }
    gone = [
        f"{claim.doc}: {claim.quote!r}"
        for claim in CLAIMS
        if claimmap.squeeze(claim.quote) not in docs[claim.doc]
    ]
    assert not gone, "quotes no longer in their document (update tests/claims.toml):\n" + (
        "\n".join(gone)
    )


def test_every_named_test_exists() -> None:
    missing = claimmap.missing_tests(CLAIMS)
    assert not missing, "tests/claims.toml names tests that do not exist:\n" + "\n".join(missing)


def test_every_row_of_the_fault_table_is_mapped() -> None:
    """Each row of RELIABILITY.md's table is a claim too: its fault must be quoted by a claim
    of RELIABILITY.md (the test that records the row proves it)."""
    text = (claimmap.ROOT / "RELIABILITY.md").read_text(encoding="utf-8")
    table = text.split("\n## ", 1)[0]
    faults = [
        line.split(" | ", 1)[0].removeprefix("| ")
        for line in table.splitlines()
        if line.startswith("| ") and not line.startswith(("| fault |", "| --- |"))
    ]
    assert len(faults) > 30, faults
    quotes = [claimmap.squeeze(c.quote) for c in CLAIMS if c.doc == "RELIABILITY.md"]
    unmapped = [f for f in faults if not any(q in claimmap.squeeze(f) for q in quotes)]
    assert not unmapped, (
        "rows of RELIABILITY.md no claim maps: add to tests/claims.toml a [[claim]] with "
        'doc = "RELIABILITY.md", the fault as its quote and the test that records the row:\n'
        + "\n".join(unmapped)
    )


def test_each_claim_is_mapped_once() -> None:
    seen: set[tuple[str, str]] = set()
    twice = []
    for claim in CLAIMS:
        key = (claim.doc, claimmap.squeeze(claim.quote))
        if key in seen:
            twice.append(claim.quote)
        seen.add(key)
    assert not twice, twice


def test_reliability_md_shows_the_mapping_as_rendered() -> None:
    text = (claimmap.ROOT / "RELIABILITY.md").read_text(encoding="utf-8")
    assert claimmap.section_of(text) == claimmap.render(CLAIMS), (
        "RELIABILITY.md's claims section differs from tests/claims.toml: regenerate it "
        "(--reliability-report) or paste claimmap.render(claimmap.load())"
    )


def test_the_checks_catch_what_they_should(tmp_path: Path) -> None:
    """The checks themselves can fail: a missing test, a class method, a parametrized id, a
    quote that spans a line break, and a section that drifted."""
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_x.py").write_text(
        "import pytest\n"
        "def test_a(): pass\n"
        "class TestB:\n    def test_c(self): pass\n"
        "def helper(): pass\n"
    )
    ok = claimmap.Claim(
        "D.md", "q", ("tests/test_x.py::test_a[1-2]", "tests/test_x.py::TestB::test_c")
    )
    bad = claimmap.Claim(
        "D.md",
        "q",
        (
            "tests/test_x.py::test_c",
            "tests/test_x.py::helper",
            "tests/test_y.py::test_a",
            "tests/test_x.py",
        ),
    )
    assert claimmap.missing_tests([ok], root=tmp_path) == []
    assert claimmap.missing_tests([bad], root=tmp_path) == list(bad.tests)
    assert claimmap.squeeze("never\n  overwriting") in claimmap.squeeze("x never overwriting y")
    rendered = claimmap.render([ok])
    doc = f"# R\n\nrows\n\n{rendered}\n## Later\n\ntext\n"
    assert claimmap.section_of(doc) == rendered
    assert claimmap.section_of(doc.replace("`tests/test_x.py::test_a", "`x")) != rendered
    assert claimmap.without_section(doc) == "# R\n\nrows\n\n## Later\n\ntext\n"
    assert "| q | `tests/test_x.py::test_a[1-2]`" in rendered
    assert claimmap.render([claimmap.Claim("D.md", "a | b", ("t",))]).count("a \\| b") == 1


def test_a_claim_without_tests_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "claims.toml"
    f.write_text('[[claim]]\ndoc = "README.md"\nquote = "x"\ntests = []\n')
    with pytest.raises(ValueError, match="non-empty `tests`"):
        claimmap.load(f)


def test_the_reliability_report_writes_the_section(tmp_path: Path) -> None:
    """Regenerating RELIABILITY.md keeps the mapping: the report writer of a real run (one
    quick reliability test in a pytest of its own) renders the section from claims.toml."""
    report = tmp_path / "RELIABILITY.md"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/reliability/test_faults.py::test_password_never_leaks",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            "-q",
            "--reliability-report",
            str(report),
        ],
        cwd=claimmap.ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    text = report.read_text(encoding="utf-8")
    assert "| the password in repr(JobManager), dsn, errors and every log record |" in text
    assert "## Known limits" in text
    assert claimmap.section_of(text) == claimmap.render(CLAIMS)
