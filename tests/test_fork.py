"""After ``os.fork()``: a child refuses its parent's stores, and the parent's data stays intact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Runs in a fresh interpreter: the parent opens a store through the shell face
# while a thread keeps sending, forks, and the child tries every verb, then
# exits normally (atexit hooks and garbage collection run). A hang in the
# child is killed by its alarm and fails the test.
SCRIPT = """
import json, os, signal, sys, threading, time
import trio
from ecosystems import InMemory, LocalDisk, Postgres
from tests.entities import Counter

kind = {"LocalDisk": LocalDisk, "InMemory": InMemory, "Postgres": Postgres}[sys.argv[1]]
location = sys.argv[2] if kind is not InMemory else None
eco = kind.connect(location)
for _ in range(10):
    eco.send_sync(Counter("c"), "inc")
if kind is Postgres:  # the parent's sessions, which the child must leave alone
    storage = eco.runtime.storage
    sessions = [c.info.backend_pid for c in (storage._writer, storage._reader)]
follower = eco.follow(Counter("c"))
sent = 10
running = True

def keep_sending():
    global sent
    while running:
        eco.send_sync(Counter("c"), "inc")
        sent += 1

sender = threading.Thread(target=keep_sending)
sender.start()
time.sleep(0.05)
pid = os.fork()
if pid == 0:
    signal.alarm(20)
    child = {}

    def attempt(name, verb):
        started = time.monotonic()
        try:
            result = verb()
        except BaseException as error:
            result = f"{type(error).__name__}: {error}"
        else:
            result = f"returned {result!r}"
        child[name] = [result, time.monotonic() - started]

    async def trio_open():
        async with kind.open(location) as fresh:
            return await fresh.send_sync(Counter("c"), "inc")

    attempt("send_sync", lambda: eco.send_sync(Counter("c"), "inc"))
    attempt("send", lambda: eco.send(Counter("c"), "inc"))
    attempt("state_of", lambda: eco.state_of(Counter("c")))
    attempt("follow", lambda: eco.follow(Counter("c")))
    attempt("dead_letters", lambda: eco.dead_letters())
    attempt("redeliver", lambda: eco.redeliver(0))
    attempt("discard", lambda: eco.discard(0))
    attempt("settle", lambda: eco.settle())
    attempt("participate", lambda: eco.participate("other").send_sync(Counter("c"), "inc"))
    attempt("kind.send_sync", lambda: kind.send_sync(Counter("c"), "inc"))
    attempt("kind.state_of", lambda: kind.state_of(Counter("c")))
    attempt("kind.connect", lambda: kind.connect(location).send_sync(Counter("c"), "inc"))
    attempt("inherited follower", lambda: (follower.flush(), follower.get(timeout=5)))
    attempt("close", lambda: eco.close())
    attempt("kind.close", lambda: kind.close())
    if kind is LocalDisk:
        attempt("reopen", lambda: kind.connect(location).send_sync(Counter("c"), "inc"))
    if kind is not InMemory:
        attempt("trio open", lambda: trio.run(trio_open))
    print(json.dumps(child), flush=True)
    sys.exit(0)
_, status = os.waitpid(pid, 0)
running = False
sender.join()
for _ in range(5):
    eco.send_sync(Counter("c"), "inc")
sent += 5
before_close = eco.state_of(Counter("c"))
kept = None
if kind is Postgres:
    kept = sessions == [c.info.backend_pid for c in (storage._writer, storage._reader)]
    kept = kept and storage.rewrites == 0
kind.close()
reopened = kind.connect(location).state_of(Counter("c")) if kind is not InMemory else None
kind.close()
print(json.dumps({"status": status, "sent": sent, "state": before_close, "reopened": reopened,
                  "kept": kept}))
"""


def run_fork_script(
    kind: str, location: str, tmp_path: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, kind, location],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PACHYDERM_HOME": str(tmp_path / "store")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stderr
    assert len(lines) == 2, (result.stdout, result.stderr)
    return json.loads(lines[0]), json.loads(lines[1])


@pytest.mark.parametrize("kind", ["LocalDisk", "InMemory", "Postgres"])
def test_a_forked_child_is_refused_at_once_and_the_parent_keeps_its_data(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """In a child forked while the shell face is busy, every verb raises ForkedProcessError at
    once (no hang, nothing written), an inherited follower ends, close() is a no-op; the child
    exits cleanly and the parent's store holds exactly the parent's increments. On Postgres
    the child may open the database afresh (a process of its own), and the parent's
    sessions, which the child inherited and let go of, are still the parent's."""
    location = str(tmp_path / "store")
    if kind == "Postgres":
        location = request.getfixturevalue("postgres_dsn")
    child, parent = run_fork_script(kind, location, tmp_path)
    assert parent["status"] == 0, "the child hung (killed by its alarm) or crashed"
    refused = [
        "send_sync",
        "send",
        "state_of",
        "follow",
        "dead_letters",
        "redeliver",
        "discard",
        "settle",
        "participate",
        "kind.send_sync",
        "kind.state_of",
        "kind.connect",
    ]
    for verb in refused:
        result, seconds = child[verb]
        assert result.startswith("ForkedProcessError: "), (verb, result)
        assert f"opened by process {os.getpid()}" not in result  # the script's, not ours
        assert "is a fork of it" in result, result
        assert "spawn" in result, result
        assert seconds < 1, (verb, seconds)
    assert child["inherited follower"][0].startswith("EOFError"), child["inherited follower"]
    assert child["close"][0] == "returned None"
    assert child["kind.close"][0] == "returned None"
    if kind == "LocalDisk":
        for verb in ("reopen", "trio open"):  # LevelDB keeps the directory locked in the child
            result = child[verb][0]
            assert result.startswith("StoreLockedError: "), (verb, result)
            assert "forked from" in result, result
            assert "spawn" in result, result
    sent = parent["sent"]
    if kind == "Postgres":  # a fresh open in the child is a process of its own
        assert child["trio open"][0].startswith("returned "), child["trio open"]
        sent += 1
        assert parent["kept"] is True, "the child closed or broke the parent's sessions"
    assert parent["state"] == sent
    if kind != "InMemory":
        assert parent["reopened"] == sent


MULTIPROCESSING_SCRIPT = """
import multiprocessing, sys
from ecosystems import LocalDisk
from tests.entities import Counter

def worker(eco, queue):
    try:
        eco.send_sync(Counter("c"), "inc")
        queue.put("sent")
    except Exception as error:
        queue.put(type(error).__name__)

if __name__ == "__main__":
    eco = LocalDisk.connect(sys.argv[1])
    eco.send_sync(Counter("c"), "inc")
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [context.Process(target=worker, args=(eco, queue)) for _ in range(4)]
    for process in workers:
        process.start()
    print(sorted(queue.get(timeout=30) for _ in workers))
    for process in workers:
        process.join(timeout=30)
    eco.send_sync(Counter("c"), "inc")
    LocalDisk.close()
    print(LocalDisk.connect(sys.argv[1]).state_of(Counter("c")))
"""


def test_multiprocessing_fork_workers_are_refused(tmp_path: Path) -> None:
    """Workers started with multiprocessing's fork method get ForkedProcessError; only the
    parent's increments are stored."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(MULTIPROCESSING_SCRIPT))
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "store")],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [str(["ForkedProcessError"] * 4), "2"], result.stdout


async def test_the_trio_face_refuses_a_forked_child(tmp_path: Path) -> None:
    """A child forked inside ``trio.run`` gets ForkedProcessError from the trio face's verbs."""
    from ecosystems import LocalDisk
    from pachyderm import ForkedProcessError
    from tests.entities import Counter

    async with LocalDisk.open(str(tmp_path)) as eco:
        await eco.send_sync(Counter("c"), "inc")
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through the pipe
            outcome = []
            for verb in (eco.send_sync, eco.send):
                try:
                    await verb(Counter("c"), "inc")
                    outcome.append("returned")
                except ForkedProcessError:
                    outcome.append("refused")
            try:
                await eco.state_of(Counter("c"))
                outcome.append("returned")
            except ForkedProcessError:
                outcome.append("refused")
            os.write(write, json.dumps(outcome).encode())
            os._exit(0)
        os.close(write)
        _, status = os.waitpid(pid, 0)
        with os.fdopen(read) as pipe:
            assert json.loads(pipe.read()) == ["refused"] * 3
        assert status == 0
        assert await eco.send_sync(Counter("c"), "inc") == 2
    async with LocalDisk.open(str(tmp_path)) as eco:
        assert await eco.state_of(Counter("c")) == 2


def test_a_store_closed_before_the_fork_can_be_opened_by_the_child(tmp_path: Path) -> None:
    """Only stores open at the fork are refused: one the parent closed before, the child opens."""
    script = textwrap.dedent(
        """
        import os, sys
        from ecosystems import LocalDisk
        from tests.entities import Counter
        eco = LocalDisk.connect(sys.argv[1])
        eco.send_sync(Counter("c"), "inc")
        eco.close()
        pid = os.fork()
        if pid == 0:
            print(LocalDisk.connect(sys.argv[1]).send_sync(Counter("c"), "inc"), flush=True)
            LocalDisk.close()
            os._exit(0)
        os.waitpid(pid, 0)
        print(LocalDisk.connect(sys.argv[1]).state_of(Counter("c")))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "store")],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.stdout.splitlines() == ["2", "2"], result.stderr
