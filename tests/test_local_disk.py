"""LocalDisk specifics: real LevelDB directories, reopened, locked, damaged, upgraded."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from ecosystems import LocalDisk
from pachyderm import (
    Entity,
    InvalidArgumentError,
    ManualClock,
    Outbox,
    OutcomeUnknownError,
    StoreCorruptedError,
    StoreLockedError,
    UnregisteredNameError,
)
from tests.entities import Alarm, Counter, Recorder, Relay

ROOT = Path(__file__).resolve().parent.parent


def run_python(code: str, *, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with the project importable."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


async def test_state_survives_reopening(tmp_path: Path) -> None:
    """State committed before closing is there after reopening the directory."""
    async with LocalDisk.open(str(tmp_path)) as eco:
        assert await eco.send_sync(Counter("c"), "inc") == 1
    async with LocalDisk.open(str(tmp_path)) as eco:
        assert await eco.state_of(Counter("c")) == 1
        assert await eco.send_sync(Counter("c"), "inc") == 2


async def test_pending_messages_are_processed_on_reopen(tmp_path: Path) -> None:
    """Accepted messages a process did not get to are processed when the directory reopens."""
    code = """
        import sys, trio
        from ecosystems import LocalDisk
        from tests.entities import Counter
        async def main():
            async with LocalDisk.open(sys.argv[1]) as eco:
                eco.runtime.pause()  # accept, never activate
                for n in range(30):
                    await eco.send(Counter(n % 3), "inc")
        trio.run(main)
    """
    writer = run_python(code.replace("sys.argv[1]", repr(str(tmp_path))))
    assert writer.returncode == 0, writer.stderr
    async with LocalDisk.open(str(tmp_path)) as eco:
        await eco.settle()
        assert [await eco.state_of(Counter(n)) for n in range(3)] == [10, 10, 10]


async def test_message_naming_an_unregistered_class_waits(tmp_path: Path) -> None:
    """A message that mentions a class this process lacks waits until the class registers."""
    result = run_python(
        f"""
        import trio
        from ecosystems import LocalDisk
        from pachyderm import Entity
        from tests.entities import Keeper
        class Later(Entity):
            entity_name = "tests.Later"
        async def main():
            async with LocalDisk.open({str(tmp_path)!r}) as eco:
                eco.runtime.pause()  # accept, never activate
                await eco.send(Keeper("k"), Later("x"))
        trio.run(main)
        """
    )
    assert result.returncode == 0, result.stderr
    from tests.entities import Keeper

    async with LocalDisk.open(str(tmp_path)) as eco:
        await eco.settle()
        assert set(eco.runtime.residents.parked) == {"tests.Later"}
        assert await eco.state_of(Keeper("k")) is None
        assert await eco.dead_letters() == []

        class Later(Entity[Any, Any]):
            entity_name = "tests.Later"

        with trio.fail_after(5):
            async with eco.follow(Keeper("k")) as updates:
                assert await updates.__anext__() == (Keeper("k"), Later("x"))


async def test_recovered_messages_for_unregistered_classes_wait(tmp_path: Path) -> None:
    """Recovered inbox messages of an unknown class are kept until the class registers."""
    writer = run_python(
        f"""
        import trio
        from ecosystems import LocalDisk
        from pachyderm import Entity
        class Ghost(Entity):
            entity_name = "tests.Ghost"
            def activate(self, message, state):
                return [], (state or []) + [message]
        async def main():
            async with LocalDisk.open({str(tmp_path)!r}) as eco:
                eco.runtime.pause()  # accept, never activate
                for word in ["a", "b", "c"]:
                    await eco.send(Ghost("g"), word)
        trio.run(main)
        """
    )
    assert writer.returncode == 0, writer.stderr
    async with LocalDisk.open(str(tmp_path)) as eco:
        await eco.settle()
        assert set(eco.runtime.residents.parked) == {"tests.Ghost"}
        [record] = eco.runtime.residents.parked["tests.Ghost"]
        assert len(record.inbox) == 3

    # A later process that has the class processes them, in order.
    reader = run_python(
        f"""
        import trio
        from ecosystems import LocalDisk
        from pachyderm import Entity
        class Ghost(Entity):
            entity_name = "tests.Ghost"
            def activate(self, message, state):
                return [], (state or []) + [message]
        async def main():
            async with LocalDisk.open({str(tmp_path)!r}) as eco:
                await eco.settle()
                print(await eco.state_of(Ghost("g")))
        trio.run(main)
        """
    )
    assert reader.stdout.strip() == "['a', 'b', 'c']", reader.stderr


def test_second_process_gets_a_clear_error(tmp_path: Path) -> None:
    """A second process opening an owned directory gets StoreLockedError naming it."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, trio
                from ecosystems import LocalDisk
                async def main():
                    async with LocalDisk.open({str(tmp_path)!r}):
                        print("open", flush=True)
                        sys.stdin.readline()
                trio.run(main)
                """
            ),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "open"
        result = run_python(
            f"""
            from ecosystems import LocalDisk
            try:
                LocalDisk.connect({str(tmp_path)!r})
            except Exception as error:
                print(type(error).__name__, error)
            """
        )
        assert result.stdout.startswith("StoreLockedError")
        assert str(tmp_path) in result.stdout
        assert "one process owns a directory" in result.stdout
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(timeout=30)
        holder.stdout.close()  # type: ignore[union-attr]


async def test_same_directory_twice_in_one_process(tmp_path: Path) -> None:
    """Opening a directory this process already has open is the same clear error."""
    async with LocalDisk.open(str(tmp_path)):
        with pytest.raises(StoreLockedError, match="already open"):
            async with LocalDisk.open(str(tmp_path)):
                pass


async def test_damaged_directory_names_the_path_and_a_way_out(tmp_path: Path) -> None:
    """A damaged LevelDB directory raises StoreCorruptedError with the path and a hint."""
    async with LocalDisk.open(str(tmp_path)) as eco:
        await eco.send_sync(Counter("c"), "inc")
    (tmp_path / "CURRENT").write_bytes(b"garbage, no newline")
    with pytest.raises(StoreCorruptedError) as caught:
        async with LocalDisk.open(str(tmp_path)):
            pass
    assert str(tmp_path) in str(caught.value)
    assert "repair" in str(caught.value)


async def test_directory_of_other_data_is_refused(tmp_path: Path) -> None:
    """A LevelDB directory that Pachyderm did not write is refused, not overwritten."""
    import plyvel

    db = plyvel.DB(str(tmp_path), create_if_missing=True)
    db.put(b"someone", b"else's data")
    db.close()
    with pytest.raises(StoreCorruptedError, match="not a Pachyderm store"):
        async with LocalDisk.open(str(tmp_path)):
            pass
    db = plyvel.DB(str(tmp_path))
    assert list(db) == [(b"someone", b"else's data")]
    db.close()


async def test_a_file_is_not_a_directory(tmp_path: Path) -> None:
    """Pointing LocalDisk at a file says it wants a directory."""
    target = tmp_path / "file"
    target.write_text("hello")
    with pytest.raises(InvalidArgumentError, match="is a file, not a directory"):
        async with LocalDisk.open(str(target)):
            pass


async def test_old_state_is_upgraded_when_loaded(tmp_path: Path) -> None:
    """State written with version 1 is read by a version 2 class through upgrade()."""

    class Account(Entity[int, Any]):  # Any: the next release changes the state type
        entity_name = "tests.Account"

        def init(self) -> int:
            return 0

        def activate(self, message: int, state: int) -> tuple[Outbox, int]:
            return [], state + message

    async with LocalDisk.open(str(tmp_path)) as eco:
        assert await eco.send_sync(Account("a"), 5) == 5

    # The class defined again (same module and qualname), as the next release of its module.
    class Account(Entity[int, Any]):  # type: ignore[no-redef]
        entity_name = "tests.Account"
        version = 2

        def init(self) -> dict[str, int]:
            return {"balance": 0, "deposits": 0}

        def activate(self, message: int, state: dict[str, int]) -> tuple[Outbox, dict[str, int]]:
            return [], {"balance": state["balance"] + message, "deposits": state["deposits"] + 1}

        def upgrade(self, state: Any, from_version: int) -> dict[str, int]:
            assert from_version == 1
            return {"balance": state, "deposits": -1}

    async with LocalDisk.open(str(tmp_path)) as eco:
        assert await eco.state_of(Account("a")) == {"balance": 5, "deposits": -1}
        assert await eco.send_sync(Account("a"), 2) == {"balance": 7, "deposits": 0}
    async with LocalDisk.open(str(tmp_path)) as eco:
        # Stored again as version 2: no second upgrade.
        assert await eco.state_of(Account("a")) == {"balance": 7, "deposits": 0}


async def test_unregistered_name_in_stored_state_says_how_to_map_it(tmp_path: Path) -> None:
    """Reading state that names a class no longer registered names it and the fix."""
    result = run_python(
        f"""
        import trio
        from ecosystems import LocalDisk
        from pachyderm import Entity
        class OldName(Entity):
            entity_name = "tests.OldName"
        async def main():
            async with LocalDisk.open({str(tmp_path)!r}) as eco:
                from tests.entities import Keeper
                await eco.send_sync(Keeper("k"), OldName("x"))
        trio.run(main)
        """
    )
    assert result.returncode == 0, result.stderr
    from tests.entities import Keeper

    async with LocalDisk.open(str(tmp_path)) as eco:
        with pytest.raises(UnregisteredNameError) as caught:
            await eco.state_of(Keeper("k"))
        assert "'tests.OldName'" in str(caught.value)
        assert "former_names = ('tests.OldName',)" in str(caught.value)

        class NewName(Entity[Any, Any]):
            entity_name = "tests.NewName"
            former_names = ("tests.OldName",)

        assert await eco.state_of(Keeper("k")) == NewName("x")


async def test_relay_chain_survives_reopen_midway(tmp_path: Path) -> None:
    """Outbox messages accepted before a close are delivered after reopening."""
    async with LocalDisk.open(str(tmp_path)) as eco:
        for n in range(20):
            await eco.send(Relay("r"), (Recorder("end"), n))
    async with LocalDisk.open(str(tmp_path)) as eco:
        await eco.settle()
        assert await eco.state_of(Recorder("end")) == list(range(20))


async def test_repair_recovers_a_damaged_directory(tmp_path: Path) -> None:
    """LocalDisk.repair, the hint the corruption error gives, brings the data back."""
    async with LocalDisk.open(str(tmp_path)) as eco:
        for _ in range(3):
            await eco.send_sync(Counter("c"), "inc")
    (tmp_path / "CURRENT").write_bytes(b"garbage, no newline")
    with pytest.raises(StoreCorruptedError):
        async with LocalDisk.open(str(tmp_path)):
            pass
    LocalDisk.repair(str(tmp_path))
    async with LocalDisk.open(str(tmp_path)) as eco:
        assert await eco.state_of(Counter("c")) == 3


async def test_timers_survive_closing_and_fire_when_due(tmp_path: Path) -> None:
    """A pending timer is durable: after a reopen, an overdue one fires promptly, once."""
    clock = ManualClock()
    async with LocalDisk.open(str(tmp_path), clock=clock) as eco:
        await eco.send_sync(Alarm("a"), ("set", 60, "late"))
        await eco.send_sync(Alarm("a"), ("set named", "n", 30, "named"))
    clock.advance(3600)
    async with LocalDisk.open(str(tmp_path), clock=clock) as eco:
        await eco.settle()
        assert await eco.state_of(Alarm("a")) == ["named", "late"]
    async with LocalDisk.open(str(tmp_path), clock=clock) as eco:
        await eco.settle()
        assert eco.runtime.statistics["timers_fired"] == 0  # fired once, in the last opening


async def test_a_directory_deleted_while_open_stops_the_store_saying_so(tmp_path: Path) -> None:
    """Deleting the directory of an open store: the next synced write is not acknowledged;
    it raises OutcomeUnknownError (the write may or may not have landed) naming the
    deletion (StoreAccessError), not a raw error."""
    store = tmp_path / "store"

    async def delete_then_send() -> None:
        async with LocalDisk.open(str(store)) as eco:
            assert await eco.send_sync(Counter("c"), "inc") == 1
            shutil.rmtree(store)
            await eco.send_sync(Counter("c"), "inc")

    with pytest.raises(OutcomeUnknownError, match="was deleted while the store") as caught:
        await delete_then_send()
    assert "StoreAccessError" in str(caught.value)
    assert str(store) in str(caught.value)


def test_a_directory_deleted_while_open_stops_the_shell_face_too(pachyderm_home: Path) -> None:
    """The shell face's send_sync after the directory is deleted raises, naming the deletion."""
    assert LocalDisk.send_sync(Counter("c"), "inc") == 1
    shutil.rmtree(pachyderm_home)
    with pytest.raises(OutcomeUnknownError, match="was deleted while the store was open"):
        LocalDisk.send_sync(Counter("c"), "inc")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB file system (tmpfs), where the test may mount one; skipped elsewhere."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small file system here (needs root)")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


async def test_a_full_disk_stops_the_store_saying_so_and_keeps_what_was_acknowledged(
    small_disk: Path,
) -> None:
    """On a full disk the failing write raises OutcomeUnknownError saying the disk is full
    (StoreAccessError, not a raw plyvel IOError); every acknowledged state reopens intact."""
    store = small_disk / "store"
    acknowledged = 0

    async def fill_the_disk() -> None:
        nonlocal acknowledged
        async with LocalDisk.open(str(store)) as eco:
            for entity in range(10_000):
                await eco.send_sync(Recorder(entity), "x" * 1000)
                acknowledged += 1

    with pytest.raises(OutcomeUnknownError, match="The disk is full") as caught:
        await fill_the_disk()
    assert "StoreAccessError" in str(caught.value)
    assert "IOError" not in str(caught.value)
    assert acknowledged > 0
    subprocess.run(  # room again, as an operator would make it
        ["mount", "-o", "remount,size=16m", str(small_disk)], check=True
    )
    async with LocalDisk.open(str(store)) as eco:
        for entity in range(acknowledged):
            assert await eco.state_of(Recorder(entity)) == ["x" * 1000], entity


POINT = """
    from dataclasses import dataclass
    from pachyderm import register_value
    @register_value(name="tests.local_disk.Point")
    @dataclass(frozen=True)
    class Point:
        x: int
"""


def test_send_sync_to_an_entity_whose_state_names_an_unregistered_type_answers(
    tmp_path: Path,
) -> None:
    """send_sync to a state naming an unregistered value type raises WaitingForClassError.

    Promptly, on both faces, instead of waiting forever; the messages are
    kept, and applied once each in a process where the type is registered.
    """
    store = str(tmp_path / "store")
    writer = run_python(
        POINT
        + f"""
    from ecosystems import LocalDisk
    from tests.entities import Recorder
    print(LocalDisk.connect({store!r}).send_sync(Recorder("r"), Point(1)))
    """
    )
    assert writer.returncode == 0, writer.stderr
    without_the_type = run_python(
        f"""
        import trio
        from ecosystems import LocalDisk
        from pachyderm import UnregisteredNameError, WaitingForClassError
        from tests.entities import Recorder
        eco = LocalDisk.connect({store!r})
        try:
            eco.state_of(Recorder("r"))
        except UnregisteredNameError as error:
            print("state_of:", error.name)
        try:
            eco.send_sync(Recorder("r"), "shell")
        except WaitingForClassError as error:
            print("shell:", error.name, error.address, "|", error)
        eco.close()
        async def main():
            async with LocalDisk.open({store!r}) as eco:
                try:
                    await eco.send_sync(Recorder("r"), "trio")
                except WaitingForClassError as error:
                    print("trio:", error.name)
        trio.run(main)
        """,
        timeout=30,  # (raises TimeoutExpired: the old way, send_sync waited forever)
    )
    assert without_the_type.returncode == 0, without_the_type.stderr
    lines = without_the_type.stdout.splitlines()
    assert lines[0] == "state_of: tests.local_disk.Point"
    assert lines[1].startswith("shell: tests.local_disk.Point Recorder('r') |")
    assert "register_value(name='tests.local_disk.Point')" in lines[1]
    assert "waits, untouched" in lines[1]
    assert "Do not send it again" in lines[1]
    assert lines[2] == "trio: tests.local_disk.Point"
    with_the_type = run_python(
        POINT
        + f"""
    from ecosystems import LocalDisk
    from tests.entities import Recorder
    eco = LocalDisk.connect({store!r})
    eco.settle()
    print(eco.state_of(Recorder("r")))
    """
    )
    assert with_the_type.returncode == 0, with_the_type.stderr
    assert with_the_type.stdout.splitlines() == ["[Point(x=1), 'shell', 'trio']"]


def test_ctrl_c_while_the_shell_face_recovers_a_backlog(tmp_path: Path) -> None:
    """Ctrl-C while the shell face opens a store with a backlog: KeyboardInterrupt, no crash.

    The store is closed only once the runtime stopped reading it (it was
    closed under the recovering thread: a segfault). Each trial interrupts a
    copy of the store at another instant; reopened, every message is applied once.
    """
    senders, per_sender = 50, 300
    pristine = tmp_path / "pristine"

    async def make_backlog() -> None:
        async with LocalDisk.open(str(pristine), durability="flush") as eco:
            eco.runtime.pause()  # accept, never activate

            async def sender(number: int) -> None:
                for message in range(per_sender):
                    await eco.send(Recorder(number), message)

            async with trio.open_nursery() as nursery:
                for number in range(senders):
                    nursery.start_soon(sender, number)

    trio.run(make_backlog)
    opener = """
        import sys
        from ecosystems import LocalDisk
        print("opening", flush=True)
        eco = LocalDisk.connect(sys.argv[1])
        print("opened", flush=True)
        eco.settle()
        print("settled", flush=True)
    """
    interrupted_while_opening = 0
    for trial, delay in enumerate((0.0, 0.01, 0.03, 0.05, 0.08, 0.12, 0.2)):
        store = tmp_path / f"trial-{trial}"
        shutil.copytree(pristine, store)
        process = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(opener), str(store)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        assert process.stdout.readline() == "opening\n"
        time.sleep(delay)
        os.kill(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=60)
        if out.endswith("settled\n"):  # done before the signal came (or as it exited)
            assert process.returncode in (0, -signal.SIGINT), err[-2000:]
        else:
            # An uncaught KeyboardInterrupt ends Python by SIGINT: -SIGINT, not -SIGSEGV.
            assert process.returncode == -signal.SIGINT, (delay, process.returncode, err[-2000:])
            assert err.rstrip().endswith("KeyboardInterrupt"), err[-2000:]
        interrupted_while_opening += "opened" not in out

        async def check(store: Path = store) -> None:
            async with LocalDisk.open(str(store)) as eco:
                await eco.settle()
                for number in range(senders):
                    assert await eco.state_of(Recorder(number)) == list(range(per_sender))

        trio.run(check)
    assert interrupted_while_opening, "no trial interrupted the opening itself"
