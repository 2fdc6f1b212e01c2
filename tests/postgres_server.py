"""A real PostgreSQL server for the test run, started by the run itself.

It uses the server binaries on the machine (Debian's ``postgresql-15``
package, or whatever ``pg_config --bindir`` names): ``initdb`` a cluster in
a temporary directory, ``pg_ctl start`` it on a unix socket there, with no
TCP port. ``pg_ctl`` refuses to run as root, so under root the cluster
belongs to the ``postgres`` user (or ``nobody``). A watchdog process stops
the server and removes its directory when the test run ends in any way,
a SIGKILL included: it waits for the end of a pipe only the run holds. ``$PACHYDERM_TEST_DSN``
names a server to use instead. Where neither exists the Postgres tests are
skipped with a message saying how to get one, unless
``$PACHYDERM_REQUIRE_POSTGRES`` is set (CI sets it): then they fail.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator

__all__ = ["HOW_TO_GET_ONE", "PostgresServer", "find_binaries"]

HOW_TO_GET_ONE = (
    "no PostgreSQL server for the Postgres tests: install the server binaries "
    "(apt install postgresql-15, or anything that puts initdb and pg_ctl on "
    "`pg_config --bindir`), or set PACHYDERM_TEST_DSN to a server where the test "
    "user may CREATE DATABASE"
)


def find_binaries() -> str | None:
    """The directory holding ``initdb`` and ``pg_ctl``, or None."""
    candidates = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            candidates.append(
                subprocess.run(
                    [pg_config, "--bindir"], capture_output=True, text=True, check=True
                ).stdout.strip()
            )
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    which = shutil.which("initdb")
    if which:
        candidates.append(os.path.dirname(which))
    for directory in candidates:
        if all(os.access(os.path.join(directory, tool), os.X_OK) for tool in ("initdb", "pg_ctl")):
            return directory
    return None


class PostgresServer:
    """A throwaway cluster: ``dsn(database)`` connects to it; :meth:`stop` removes it."""

    def __init__(self, binaries: str) -> None:
        self.binaries = binaries
        self.directory = tempfile.mkdtemp(prefix="pachyderm-pg-")
        self.user: str | None = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                with contextlib.suppress(KeyError):
                    pwd.getpwnam(name)
                    self.user = name
                    break
            os.chown(self.directory, pwd.getpwnam(self.user or "nobody").pw_uid, -1)
        self.data = os.path.join(self.directory, "data")
        self._run(
            "initdb", "-D", self.data, "-A", "trust", "-U", "pachyderm", "--no-sync", "-E", "UTF8"
        )
        options = (
            f"-k {self.directory} -c listen_addresses='' -c max_connections=200 "
            f"-c shared_buffers=64MB -c idle_in_transaction_session_timeout=60s"
        )
        self._run(
            "pg_ctl", "-D", self.data, "-o", options, "-l",
            os.path.join(self.directory, "log"), "-w", "-t", "60", "start",
        )  # fmt: skip
        # In a session of its own, so that Ctrl-C at the terminal leaves it to clean up.
        self.watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, os.path.join(binaries, "pg_ctl"), self.data,
             self.directory, self.user or ""],
            stdin=subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip

    def _run(self, tool: str, *arguments: str) -> None:
        subprocess.run(
            [os.path.join(self.binaries, tool), *arguments],
            check=True,
            capture_output=True,
            user=self.user,
            cwd=self.directory,
        )

    def dsn(self, database: str = "postgres") -> str:
        return f"host={self.directory} user=pachyderm dbname={database}"

    def log(self) -> str:
        with open(os.path.join(self.directory, "log"), errors="replace") as file:
            return file.read()

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)
        if self.watchdog.stdin is not None:
            self.watchdog.stdin.close()
        self.watchdog.wait(timeout=60)


# Reads its stdin until the test run's end of the pipe closes (the run ended, however),
# then stops the server and removes its directory.
_WATCHDOG = """
import shutil, subprocess, sys
pg_ctl, data, directory, user = sys.argv[1:]
sys.stdin.buffer.read()
subprocess.run([pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"], user=user or None,
               capture_output=True, check=False)
shutil.rmtree(directory, ignore_errors=True)
"""


@contextlib.contextmanager
def running_server() -> Iterator[str | None]:
    """Yield a DSN base (a server's ``postgres`` database), or None if there is none."""
    given = os.environ.get("PACHYDERM_TEST_DSN")
    if given:
        yield given
        return
    binaries = find_binaries()
    if binaries is None:
        yield None
        return
    server = PostgresServer(binaries)
    try:
        yield server.dsn()
    finally:
        server.stop()
