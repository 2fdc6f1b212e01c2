"""The pytest plugin, as users meet it: real pytest runs of test files that use its fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ENTITIES = """
from typing import Any

import pytest

from pachyderm import Entity, Outbox


class Counter(Entity[Any, int]):
    entity_name = "plugin_case.Counter"

    def init(self) -> int:
        return 0

    def activate(self, message: Any, state: int) -> tuple[Outbox, int]:
        return [], state + 1


class Log(Entity[Any, list]):
    entity_name = "plugin_case.Log"

    def init(self) -> list:
        return []

    def activate(self, message: Any, state: list) -> tuple[Outbox, list]:
        return [], [*state, message]
"""


def run(pytester: pytest.Pytester, body: str, *arguments: str) -> pytest.RunResult:
    """Run a test file of ``ENTITIES`` + ``body`` in a pytest process of its own."""
    pytester.makepyfile(test_plugin_case=ENTITIES + body)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *arguments)


def test_each_test_gets_an_ecosystem_of_its_own(pytester: pytest.Pytester) -> None:
    """Two tests sending to the same address each start from a fresh entity (InMemory)."""
    result = run(
        pytester,
        """
def test_one(pachyderm_ecosystem):
    assert pachyderm_ecosystem.send_sync(Counter("c"), "inc") == 1

def test_two(pachyderm_ecosystem):
    assert pachyderm_ecosystem.send_sync(Counter("c"), "inc") == 1
""",
    )
    result.assert_outcomes(passed=2)


def test_an_option_picks_local_disk_in_the_tests_directory(pytester: pytest.Pytester) -> None:
    """--pachyderm-ecosystem=LocalDisk gives a LevelDB store under the test's tmp_path."""
    body = """
def test_on_disk(pachyderm_ecosystem, tmp_path):
    from ecosystems import LocalDisk
    assert pachyderm_ecosystem is LocalDisk.connect(str(tmp_path / "pachyderm-store"))
    assert pachyderm_ecosystem.send_sync(Counter("c"), "inc") == 1
    assert (tmp_path / "pachyderm-store" / "CURRENT").exists()
"""
    run(pytester, body, "--pachyderm-ecosystem=LocalDisk").assert_outcomes(passed=1)
    run(pytester, body).assert_outcomes(failed=1)  # InMemory by default: no such store


def test_trio_tests_run_on_the_chosen_kind(pytester: pytest.Pytester) -> None:
    """An async test marked trio runs in trio.run with pachyderm_open; its failures fail it."""
    body = """
@pytest.mark.trio
async def test_counts(pachyderm_open):
    async with pachyderm_open() as eco:
        assert await eco.send_sync(Counter("c"), "inc") == 1

@pytest.mark.trio
async def test_reopens(pachyderm_open):
    async with pachyderm_open() as eco:
        await eco.send_sync(Counter("c"), "inc")
    async with pachyderm_open() as eco:
        assert await eco.state_of(Counter("c")) == 1   # LocalDisk only: InMemory starts afresh
"""
    run(pytester, body, "--pachyderm-ecosystem=LocalDisk").assert_outcomes(passed=2)
    run(pytester, body).assert_outcomes(passed=1, failed=1)


def test_a_violation_fails_with_its_trace_and_writes_the_diagram(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    """pachyderm_explore fails the test with the numbered trace, and writes .mmd and .html."""
    diagrams = tmp_path / "diagrams"
    result = run(
        pytester,
        """
def test_order(pachyderm_explore):
    log = Log("log")
    first_is_a = lambda w: w.state_of(log)[:1] != ["<b>"]
    pachyderm_explore([(log, "a"), (log, "<b>")], invariants=[first_is_a])

def test_fine(pachyderm_explore):
    result = pachyderm_explore([(Counter("c"), "inc"), (Counter("c"), "inc")])
    assert result.final_worlds[0].state_of(Counter("c")) == 2
""",
        f"--pachyderm-diagrams={diagrams}",
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*fails after 1 step*", "1. deliver outside -> Log('log'): '<b>'"])
    [mermaid] = diagrams.glob("*test_order-*.mmd")
    assert mermaid.read_text().startswith("sequenceDiagram")
    page = mermaid.with_suffix(".html").read_text()
    assert "&lt;b&gt;" in page  # the trace, escaped
    assert '<pre class="mermaid">sequenceDiagram' in page
    result.stdout.fnmatch_lines([f"diagram: {mermaid}"])


def test_each_test_gets_diagram_files_of_its_own_whatever_its_id(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    """Ids that differ only in characters a file name cannot hold get files of their own,
    and an id longer than a file name may be still gets its trace and files (the three
    wrote one file; the long one failed on "File name too long", its trace unseen)."""
    diagrams = tmp_path / "diagrams"
    body = """
@pytest.mark.parametrize("tag", ["a b", "a_b", "a/b", "x" * 300], ids=lambda tag: tag)
def test_ids(pachyderm_explore, tag):
    one_first = lambda w: w.state_of(Log(tag))[:1] != [2]
    pachyderm_explore([(Log(tag), 1), (Log(tag), 2)], invariants=[one_first])
"""
    result = run(pytester, body, f"--pachyderm-diagrams={diagrams}")
    result.assert_outcomes(failed=4)
    # Counted at line starts: with $CI set, pytest's short summary repeats each message.
    traces = [line for line in result.outlines if line.startswith("<lambda> fails after 1 step")]
    assert len(traces) == 4
    assert len(list(diagrams.glob("*.mmd"))) == 4
    assert len(list(diagrams.glob("*.html"))) == 4


def test_diagrams_go_beside_the_junit_report(pytester: pytest.Pytester) -> None:
    """With --junitxml and no diagram directory, diagrams go in a pachyderm-diagrams
    directory beside the report."""
    body = """
def test_order(pachyderm_explore):
    one_first = lambda w: w.state_of(Log("l"))[:1] != [2]
    pachyderm_explore([(Log("l"), 1), (Log("l"), 2)], invariants=[one_first])
"""
    run(pytester, body, "--junitxml=reports/junit.xml").assert_outcomes(failed=1)
    assert list((pytester.path / "reports" / "pachyderm-diagrams").glob("*.html"))


def test_an_incomplete_search_fails_unless_allowed(pytester: pytest.Pytester) -> None:
    """A search cut short by a budget fails the test, unless allow_incomplete=True."""
    result = run(
        pytester,
        """
MESSAGES = [(Log("l"), n) for n in range(5)]

def test_strict(pachyderm_explore):
    pachyderm_explore(MESSAGES, max_worlds=10)

def test_allowed(pachyderm_explore):
    assert pachyderm_explore(MESSAGES, max_worlds=10, allow_incomplete=True).unique_states == 10
""",
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*did not visit every world*stopped early (max_worlds)*"])


def test_a_misspelt_option_fails_at_the_tests_call_with_the_message_alone(
    pytester: pytest.Pytester,
) -> None:
    """A bad option or envelope given to pachyderm_explore fails the test with the
    refusal (naming the option meant) at the test's own line, not with a page of
    Simulation.explore's code."""
    result = run(
        pytester,
        """
def test_typo(pachyderm_explore):
    pachyderm_explore([(Counter("c"), "inc")], invariant=[lambda w: True])

def test_bad_envelope(pachyderm_explore):
    pachyderm_explore([("c", "inc")])
""",
    )
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            ">*pachyderm_explore(*invariant=*",
            "E*InvalidArgumentError: *no option 'invariant' (did you mean 'invariants'?)*",
            '>*pachyderm_explore(*"c", "inc"*',  # (fnmatch reads [ ] as a set)
            "E*InvalidAddressError: envelopes are (address, message) pairs*",
        ]
    )
    assert "def explore(" not in result.stdout.str()
    assert "simulation/_" not in result.stdout.str()  # no frames of the library's own


def test_a_bad_ecosystem_choice_is_a_usage_error(pytester: pytest.Pytester) -> None:
    """An unknown kind in the ini option stops the run with a message naming it."""
    pytester.makeini("[pytest]\npachyderm_ecosystem = Postgress\n")
    result = run(pytester, "\ndef test_x(pachyderm_ecosystem):\n    pass\n")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*'Postgress'*"])


def test_the_readme_example_passes_on_both_kinds(pytester: pytest.Pytester) -> None:
    """The README's example test file passes as written, on InMemory and on LocalDisk."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    [example] = [
        block.split("```", 1)[0]
        for block in readme.split("```python\n")[1:]
        if block.startswith("# test_counter.py\n")
    ]
    pytester.makepyfile(test_counter=example)
    for arguments in ([], ["--pachyderm-ecosystem=LocalDisk"]):
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *arguments)
        result.assert_outcomes(passed=3)


def test_the_plugin_loads_by_its_entry_points_name(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the README says: with autoloading off, ``-p pachyderm`` loads the plugin; with
    it on, ``-p no:pachyderm`` turns it off."""
    body = """
def test_counts(pachyderm_ecosystem):
    assert pachyderm_ecosystem.send_sync(Counter("c"), "inc") == 1
"""
    pytester.makepyfile(test_plugin_case=ENTITIES + body)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:pachyderm")
    result.assert_outcomes(errors=1)  # fixture 'pachyderm_ecosystem' not found
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "pachyderm")
    result.assert_outcomes(passed=1)


# An entity whose "m" sets a timer for less time than the one "go" set before it.
ALARM = """
from pachyderm import after


class Alarm(Entity[Any, list]):
    entity_name = "plugin_case.Alarm"

    def init(self) -> list:
        return []

    def activate(self, message: Any, state: list) -> tuple[Outbox, list]:
        delays = {"go": 10, "m": 1}
        outbox = [after(delays[message], self, "rang")] if message in delays else []
        return outbox, [*state, message]
"""


def test_a_search_that_skips_timer_orders_warns_and_can_be_made_to_fail(
    pytester: pytest.Pytester,
) -> None:
    """pachyderm_explore's search that may skip timer orders shows a TimerOrderWarning in
    pytest's summary, at the test's line; ``-W error::pachyderm.TimerOrderWarning`` makes
    it fail the test."""
    body = (
        ALARM
        + """

def test_alarms(pachyderm_explore):
    pachyderm_explore([(Alarm("a"), "go"), (Alarm("a"), "m")])
"""
    )
    result = run(pytester, body)
    result.assert_outcomes(passed=1, warnings=1)
    # Shown at the test's own line, not the plugin's.
    result.stdout.fnmatch_lines(
        ["*test_plugin_case.py:*: TimerOrderWarning: timer orders maybe not explored*"]
    )
    result = run(pytester, body, "-W", "error::pachyderm.TimerOrderWarning")
    result.assert_outcomes(failed=1)


def test_a_violation_shows_its_trace_even_when_timer_warnings_are_errors(
    pytester: pytest.Pytester,
) -> None:
    """With ``-W error::pachyderm.TimerOrderWarning``, a search that both violates and may
    skip timer orders fails with the violation's trace and diagram (the warning raised
    inside the search hid them)."""
    body = (
        ALARM
        + """

def test_alarms(pachyderm_explore):
    go_first = lambda w: w.state_of(Alarm("a"))[:1] != ["m"]
    pachyderm_explore(
        [(Alarm("a"), "go"), (Alarm("a"), "m")],
        invariants=[go_first],
        stop_at_first_violation=False,  # (so that the search meets the timer gap too)
    )
"""
    )
    result = run(pytester, body, "-W", "error::pachyderm.TimerOrderWarning")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*<lambda> fails after 1 step*", "diagram: *"])
