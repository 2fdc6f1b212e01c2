"""Pachyderm's pytest plugin, loaded by entry point once the package is installed.

Fixtures:

- ``pachyderm_ecosystem``: an isolated live ecosystem for the test, shell face.
  InMemory unless ``--pachyderm-ecosystem=LocalDisk`` (or the ini option
  ``pachyderm_ecosystem``) picks a LevelDB store in the test's ``tmp_path``.
- ``pachyderm_open``: the same choice for the trio face:
  ``async with pachyderm_open() as eco``, in an ``async def`` test marked
  ``@pytest.mark.trio`` (run in ``trio.run`` by this plugin, unless
  pytest-trio is installed, which then runs it).
- ``pachyderm_explore``: ``Simulation.explore`` that fails the test on a
  violation (or an incomplete search) with the numbered trace, and writes the
  trace as a Mermaid diagram and an HTML page showing it beside the test report.
"""

from __future__ import annotations

import functools
import hashlib
import html
import inspect
import itertools
import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pachyderm._ecosystem import Ecosystem
    from pachyderm._kind import EcosystemKind
    from pachyderm._shell import ShellEcosystem
    from simulation import Exploration, World

__all__ = ["Explorer"]

KINDS = ("InMemory", "LocalDisk")
_DIAGRAMS = ".pachyderm"  # under the rootdir, when no report directory is known
_ecosystem_ids = itertools.count()

_PAGE = """<!doctype html>
<meta charset="utf-8">
<title>{title}</title>
<h1>{title}</h1>
<pre>{trace}</pre>
<pre class="mermaid">{diagram}</pre>
<script type="module">
import mermaid from "https://cdn.jsdelivr.net/npm/mermaid@11/dist/mermaid.esm.min.mjs";
mermaid.initialize({{startOnLoad: true}});
</script>
"""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pachyderm")
    group.addoption(
        "--pachyderm-ecosystem",
        choices=KINDS,
        default=None,
        help="the live ecosystem of the pachyderm_ecosystem fixture (default: InMemory)",
    )
    group.addoption(
        "--pachyderm-diagrams",
        default=None,
        metavar="DIR",
        help="where failing explorations write their diagrams (default: pachyderm-diagrams/ "
        f"beside the --junitxml report, else {_DIAGRAMS}/ under the rootdir)",
    )
    parser.addini("pachyderm_ecosystem", "the default of --pachyderm-ecosystem", default="InMemory")


def pytest_configure(config: pytest.Config) -> None:
    _kind_name(config)  # a bad choice stops the run before any test
    if not config.pluginmanager.hasplugin("trio"):
        config.addinivalue_line(
            "markers", "trio: run this async test in a trio.run of its own (pachyderm's plugin)"
        )


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests marked ``trio`` in a fresh ``trio.run``."""
    if (
        not inspect.iscoroutinefunction(pyfuncitem.obj)
        or pyfuncitem.get_closest_marker("trio") is None
        or pyfuncitem.config.pluginmanager.hasplugin("trio")
    ):
        return None
    import trio

    arguments = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    trio.run(functools.partial(pyfuncitem.obj, **arguments))
    return True


def _kind_name(config: pytest.Config) -> str:
    chosen = config.getoption("--pachyderm-ecosystem") or config.getini("pachyderm_ecosystem")
    if chosen not in KINDS:
        raise pytest.UsageError(
            f"pachyderm_ecosystem must be one of {', '.join(KINDS)}, got {chosen!r}"
        )
    return str(chosen)


def _kind(name: str) -> EcosystemKind:
    import ecosystems

    kind: EcosystemKind = getattr(ecosystems, name)
    return kind


@pytest.fixture
def pachyderm_ecosystem(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ShellEcosystem]:
    """An ecosystem of the chosen kind that no other test sees (shell face)."""
    name = _kind_name(request.config)
    if name == "InMemory":  # one store per process: isolated by an ecosystem of its own
        yield _kind(name).participate(f"pytest-{next(_ecosystem_ids)}")
        return
    eco = _kind(name).connect(str(tmp_path / "pachyderm-store"))
    try:
        yield eco
    finally:
        eco.close()


@pytest.fixture
def pachyderm_open(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[..., AbstractAsyncContextManager[Ecosystem]]:
    """Opens a store of the chosen kind in the test's trio.run: ``async with pachyderm_open()``.

    Options are those of ``open`` (``clock=ManualClock()``, ...); LocalDisk
    opens the same directory each time, so a test can close and reopen it.
    """
    kind = _kind(_kind_name(request.config))
    location = None if kind is _kind("InMemory") else str(tmp_path / "pachyderm-store")
    return functools.partial(kind.open, location)


class Explorer:
    """``pachyderm_explore(envelopes, **options)``: explore, and fail the test on a violation.

    Options are those of ``Simulation.explore``; ``allow_incomplete=True``
    accepts a search cut short by a budget or ``max_depth``. On failure the
    trace is written as ``<test>-<hash>.mmd`` (Mermaid) and ``.html`` (a page
    drawing it) in the diagram directory, and the test fails with the
    numbered trace and the paths.
    """

    def __init__(self, test_name: str, directory: Path) -> None:
        self.test_name = test_name
        self.directory = directory
        self.written: list[Path] = []

    def __call__(
        self,
        envelopes: Iterable[tuple[Any, Any]],
        world: World | None = None,
        *,
        allow_incomplete: bool = False,
        **options: Any,
    ) -> Exploration:
        from pachyderm.errors import PachydermError
        from simulation import Simulation

        __tracebackhide__ = True  # pytest shows a failure at the test's own call
        # Warnings held back until the result is judged: one turned into an error
        # (-W error::pachyderm.TimerOrderWarning) must not hide a violation's trace.
        with warnings.catch_warnings(record=True) as held:
            warnings.simplefilter("always")
            try:
                result = Simulation.explore(envelopes, world, **options)
            except PachydermError as error:  # (bad options, envelopes, messages): its text
                raise error.with_traceback(None) from error.__cause__  # not explore's code
        if result.violations:
            violation = result.violations[0]
            try:
                mermaid, page = self._write(str(violation), violation.diagram)
                written = f"diagram: {mermaid}\npage: {page}"
            except OSError as error:  # (a full disk, a read-only directory): the trace still shows
                written = f"the diagram could not be written: {error}"
            pytest.fail(f"{violation}\n\n{result!r}\n{written}", pytrace=False)
        if not result.complete and not allow_incomplete:
            pytest.fail(
                f"the exploration did not visit every world: {result}\n"
                f"(pass allow_incomplete=True to accept a search cut short)",
                pytrace=False,
            )
        for warning in held:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
        return result

    def _write(self, trace: str, diagram: str) -> tuple[Path, Path]:
        self.directory.mkdir(parents=True, exist_ok=True)
        # Readable, short enough for any file system, and one per test: ids that differ
        # only in characters a file name cannot hold still get files of their own.
        readable = re.sub(r"[^\w.\-\[\]]+", "_", self.test_name).strip("_")[-100:]
        digest = hashlib.blake2b(self.test_name.encode(), digest_size=5).hexdigest()
        stem = f"{readable or 'exploration'}-{digest}"
        mermaid = self.directory / f"{stem}.mmd"
        page = self.directory / f"{stem}.html"
        mermaid.write_text(diagram + "\n", encoding="utf-8")
        page.write_text(
            _PAGE.format(
                title=html.escape(self.test_name),
                trace=html.escape(trace),
                diagram=html.escape(diagram),
            ),
            encoding="utf-8",
        )
        self.written += [mermaid, page]
        return mermaid, page


def _diagram_directory(config: pytest.Config) -> Path:
    chosen = config.getoption("--pachyderm-diagrams")
    if chosen:
        return Path(chosen).resolve()
    report = getattr(config.option, "xmlpath", None)
    if report:
        return Path(report).resolve().parent / "pachyderm-diagrams"
    return config.rootpath / _DIAGRAMS


@pytest.fixture
def pachyderm_explore(request: pytest.FixtureRequest) -> Explorer:
    """Explore every delivery order; a violation fails the test with its trace and diagram."""
    return Explorer(request.node.nodeid, _diagram_directory(request.config))
