"""The claim -> test mapping (tests/claims.toml): every guarantee README.md and RELIABILITY.md
state, quoted, with the tests that would fail without it.

Used by tests/test_claims.py (which checks the quotes, the tests and RELIABILITY.md's section)
and by the reliability report writer in tests/conftest.py (which renders the section, so a
regenerated RELIABILITY.md keeps it).
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the test venv is 3.11+; tomli is tomllib's own backport
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CLAIMS = ROOT / "tests" / "claims.toml"
HEADING = "## Claims and the tests that prove them"


@dataclass(frozen=True)
class Claim:
    doc: str
    quote: str
    tests: tuple[str, ...]


def load(path: Path = CLAIMS) -> list[Claim]:
    """The claims in file order. A claim without a document, a quote or a test is an error."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    claims = []
    for i, entry in enumerate(data.get("claim", []), 1):
        unknown = set(entry) - {"doc", "quote", "tests"}
        if unknown or not entry.get("doc") or not entry.get("quote") or not entry.get("tests"):
            raise ValueError(
                f"{path.name}: claim {i} needs exactly `doc`, `quote` and a non-empty `tests` "
                f"list (got keys {sorted(entry)})"
            )
        claims.append(Claim(entry["doc"], entry["quote"], tuple(entry["tests"])))
    return claims


def squeeze(text: str) -> str:
    """Runs of whitespace (line breaks of a wrapped paragraph included) as one space."""
    return re.sub(r"\s+", " ", text).strip()


def without_section(text: str) -> str:
    """A document without the rendered claims section (which quotes everything it maps)."""
    start = text.find(HEADING)
    if start < 0:
        return text
    end = text.find("\n## ", start + len(HEADING))
    return text[:start] + (text[end + 1 :] if end >= 0 else "")


def section_of(text: str) -> str | None:
    """The claims section as it stands in a document (heading to the next `## ` or the end)."""
    start = text.find(HEADING)
    if start < 0:
        return None
    end = text.find("\n## ", start + len(HEADING))
    return (text[start:end] if end >= 0 else text[start:]).rstrip("\n") + "\n"


def test_functions(path: Path) -> set[str]:
    """The test functions of a file, as node ids name them: `test_x` and `Class::test_x`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()

    def walk(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                walk(node.body, f"{prefix}{node.name}::")
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and (
                node.name.startswith("test")
            ):
                names.add(prefix + node.name)
            elif isinstance(node, ast.ImportFrom) and not prefix:
                # `from test_a import test_x as test_y` runs test_x again under a new name.
                imported = (a.asname or a.name for a in node.names)
                names.update(n for n in imported if n.startswith("test"))

    walk(tree.body, "")
    return names


def missing_tests(claims: list[Claim], root: Path = ROOT) -> list[str]:
    """Node ids that name no test function (parametrized ids by their function's name)."""
    cache: dict[str, set[str]] = {}
    missing = []
    for claim in claims:
        for node_id in claim.tests:
            file, sep, rest = node_id.partition("::")
            function = rest.split("[", 1)[0]
            path = root / file
            if not sep or not file.startswith("tests/") or not path.is_file():
                missing.append(node_id)
                continue
            if file not in cache:
                cache[file] = test_functions(path)
            if function not in cache[file]:
                missing.append(node_id)
    return missing


def _cell(text: str) -> str:
    return squeeze(text).replace("|", "\\|")


def render(claims: list[Claim]) -> str:
    """RELIABILITY.md's section: one table per document, in the mapping's order."""
    lines = [
        HEADING,
        "",
        "Every guarantee README.md and this file state, quoted, with the tests that would fail "
        "without it. The mapping is `tests/claims.toml`; `tests/test_claims.py` fails when a "
        "quote is no longer in its document, when a named test does not exist, when a row of "
        "the fault table above is no claim's, or when this section is not what the mapping "
        f"renders (`--reliability-report` writes it from the same file). {len(claims)} claims.",
    ]
    docs: list[str] = []
    for claim in claims:
        if claim.doc not in docs:
            docs.append(claim.doc)
    for doc in docs:
        lines += ["", f"### {doc}", "", "| claim | tests |", "| --- | --- |"]
        for claim in claims:
            if claim.doc == doc:
                tests = ", ".join(f"`{t}`" for t in claim.tests)
                lines.append(f"| {_cell(claim.quote)} | {tests} |")
    return "\n".join(lines) + "\n"
