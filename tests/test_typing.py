"""Type tests: the files in tests/typing/ pass mypy --strict, or fail exactly where they say.

A ``fail_*.py`` file marks each line mypy must reject with a trailing comment
naming the error codes, like ``# E: arg-type`` or ``# E: arg-type, misc``;
every other file there must type-check. mypy runs once, in process, with the
project's configuration and its cache (``.mypy_cache``).
"""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from mypy import api

ROOT = Path(__file__).resolve().parent.parent
TYPE_TESTS = sorted((ROOT / "tests" / "typing").glob("*.py"))
FAIL_FILES = [path for path in TYPE_TESTS if path.name.startswith("fail_")]
PASS_FILES = [path for path in TYPE_TESTS if not path.name.startswith("fail_")]

DECLARED = re.compile(r"#\s*E:\s*(?P<codes>[\w-]+(?:\s*,\s*[\w-]+)*)\s*$")
REPORTED = re.compile(
    r"^(?P<path>.+?):(?P<line>\d+)(?::\d+)*: error: .*?(?:\[(?P<code>[\w-]+)\])?$"
)

Error = tuple[str, int, str]
"""An error as (file name, line, code)."""


def declared_errors(path: Path) -> Counter[Error]:
    """The errors a file's ``# E:`` comments declare."""
    errors: Counter[Error] = Counter()
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        match = DECLARED.search(line)
        if match:
            for code in match["codes"].split(","):
                errors[path.name, number, code.strip()] += 1
    return errors


@pytest.fixture(scope="module")
def reported() -> dict[Path, list[tuple[Error, str]]]:
    """Run mypy --strict over every type test file once: its errors by file, with their text."""
    arguments = [
        *("--config-file", str(ROOT / "pyproject.toml")),
        *("--cache-dir", str(ROOT / ".mypy_cache")),
        *("--strict", "--show-absolute-path", "--no-pretty", "--no-error-summary"),
        *("--show-error-codes", "--hide-error-context", "--no-color-output"),
        *(str(path) for path in TYPE_TESTS),
    ]
    with contextlib.chdir(ROOT):  # module names are found from the project root
        stdout, stderr, status = api.run(arguments)
    assert status in (0, 1), f"mypy did not run (exit status {status}):\n{stdout}{stderr}"
    errors: dict[Path, list[tuple[Error, str]]] = {}
    for line in stdout.splitlines():
        match = REPORTED.match(line)
        if match:
            path = Path(match["path"]).resolve()
            error = (path.name, int(match["line"]), match["code"] or "no code")
            errors.setdefault(path, []).append((error, line))
    return errors


def _report(lines: Iterator[str]) -> str:
    return "\n".join(lines) or "(none)"


@pytest.mark.parametrize("path", PASS_FILES, ids=[path.name for path in PASS_FILES])
def test_pass_file_type_checks(path: Path, reported: dict[Path, list[tuple[Error, str]]]) -> None:
    """A type test file not named fail_* declares no error and mypy --strict reports none."""
    assert not declared_errors(path), f"{path.name} declares errors: name it fail_*.py"
    assert path not in reported, _report(text for _, text in reported[path])


@pytest.mark.parametrize("path", FAIL_FILES, ids=[path.name for path in FAIL_FILES])
def test_fail_file_reports_exactly_its_declared_errors(
    path: Path, reported: dict[Path, list[tuple[Error, str]]]
) -> None:
    """A fail_* file gets exactly the errors (line and code) its # E: comments declare."""
    expected = declared_errors(path)
    assert expected, f"{path.name} declares no error; mark lines with # E: <code>"
    found = reported.get(path, [])
    actual = Counter(error for error, _ in found)
    unexpected = actual - expected
    problems = [
        *(
            f"declared, not reported: line {line} [{code}]"
            for _, line, code in sorted((expected - actual).elements())
        ),
        *(f"reported, not declared: {text}" for error, text in found if error in unexpected),
    ]
    assert not problems, "\n".join(problems)


def test_no_errors_outside_the_type_test_files(
    reported: dict[Path, list[tuple[Error, str]]],
) -> None:
    """The library the type tests import has no mypy --strict error of its own."""
    elsewhere = [
        text for path, errors in reported.items() if path not in TYPE_TESTS for _, text in errors
    ]
    assert not elsewhere, _report(iter(elsewhere))


def test_there_are_type_tests_of_both_kinds() -> None:
    """tests/typing/ holds files that must type-check and files that must not."""
    assert PASS_FILES
    assert FAIL_FILES
