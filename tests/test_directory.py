"""Opening a LocalDisk directory: claimed by its real path, never created over existing files."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from ecosystems import LocalDisk
from pachyderm import InvalidArgumentError, StoreCorruptedError, StoreLockedError
from tests.entities import Counter


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file in ``directory`` (not below it), by name, with its bytes."""
    return {path.name: path.read_bytes() for path in directory.iterdir() if path.is_file()}


async def fill(directory: Path, increments: int = 5) -> None:
    """A real store with one counter at ``increments``, closed."""
    async with LocalDisk.open(str(directory)) as eco:
        for _ in range(increments):
            await eco.send_sync(Counter("c"), "inc")


@pytest.mark.parametrize("spelling", ["symlink", "relative", "dotdot", "trailing slash"])
async def test_a_second_spelling_of_an_open_directory_is_refused(
    tmp_path: Path, spelling: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One directory opened twice in one process under two spellings: the second open
    gets StoreLockedError naming both spellings, and no acknowledged increment is lost."""
    store = tmp_path / "store"
    store.mkdir()
    (tmp_path / "sub").mkdir()
    (tmp_path / "link").symlink_to(store)
    monkeypatch.chdir(tmp_path / "sub")
    other = {
        "symlink": str(tmp_path / "link"),
        "relative": os.path.join("..", "store"),
        "dotdot": str(tmp_path / "link" / ".." / "store"),
        "trailing slash": str(store) + "/",
    }[spelling]
    async with LocalDisk.open(str(store)) as eco:
        await eco.send_sync(Counter("c"), "inc")
        with pytest.raises(StoreLockedError, match="already open in this process") as caught:
            async with LocalDisk.open(other) as second:
                await second.send_sync(Counter("c"), "inc")
        if spelling == "symlink":  # the only one still spelt differently once made absolute
            assert str(store) in str(caught.value)
            assert "the same directory" in str(caught.value)
        await eco.send_sync(Counter("c"), "inc")
    async with LocalDisk.open(other) as eco:  # closed, it opens under any spelling
        assert await eco.state_of(Counter("c")) == 2


def test_the_shell_face_refuses_a_second_spelling_too(tmp_path: Path) -> None:
    """LocalDisk.connect through a symlink to a directory the shell face has open is refused."""
    store = tmp_path / "store"
    (tmp_path / "link").symlink_to(store, target_is_directory=True)
    try:
        LocalDisk.send_sync(Counter("c"), "inc", LocalDisk.connect(str(store)))
        with pytest.raises(StoreLockedError, match="the same directory"):
            LocalDisk.connect(str(tmp_path / "link"))
        assert LocalDisk.state_of(Counter("c"), LocalDisk.connect(str(store))) == 1
    finally:
        LocalDisk.close()


async def test_a_copy_without_current_is_refused_untouched_then_repaired(tmp_path: Path) -> None:
    """A store copied without its CURRENT file is refused with StoreCorruptedError naming the
    directory and repair; its files stay byte-identical; repair brings the data back."""
    original = tmp_path / "original"
    await fill(original, 5)
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    (copy / "CURRENT").unlink()
    before = snapshot(copy)
    assert any(name.endswith((".ldb", ".log")) for name in before)
    with pytest.raises(StoreCorruptedError, match="no CURRENT file") as caught:
        async with LocalDisk.open(str(copy)):
            pass
    assert str(copy) in str(caught.value)
    assert "LocalDisk.repair" in str(caught.value)
    assert snapshot(copy) == before
    LocalDisk.repair(str(copy))
    async with LocalDisk.open(str(copy)) as eco:
        assert await eco.state_of(Counter("c")) == 5


async def test_a_directory_of_other_files_is_refused_untouched(tmp_path: Path) -> None:
    """A non-empty directory that is no store is refused naming its files; nothing is
    created in it or removed from it."""
    (tmp_path / "notes.txt").write_text("my notes")
    (tmp_path / "photos").mkdir()
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(StoreCorruptedError, match="not a LocalDisk store") as caught:
        async with LocalDisk.open(str(tmp_path)):
            pass
    assert "'notes.txt'" in str(caught.value)
    assert "empty or new directory" in str(caught.value)
    assert sorted(os.listdir(tmp_path)) == before
    assert (tmp_path / "notes.txt").read_text() == "my notes"


async def test_files_of_ones_own_named_as_leveldb_names_them_are_kept(tmp_path: Path) -> None:
    """A directory holding only a user's files named LOG and LOG.old is no empty one:
    refused, the files kept (LevelDB's own, left by a failed creation, do not count)."""
    (tmp_path / "LOG").write_text("my build log")
    (tmp_path / "LOG.old").write_text("yesterday's")
    with pytest.raises(StoreCorruptedError, match=r"it holds 'LOG', 'LOG\.old'"):
        async with LocalDisk.open(str(tmp_path)):
            pass
    assert (tmp_path / "LOG").read_text() == "my build log"
    assert (tmp_path / "LOG.old").read_text() == "yesterday's"


async def test_an_empty_directory_becomes_a_store(tmp_path: Path) -> None:
    """An existing empty directory, and a new one, are where stores are created."""
    new = tmp_path / "new" / "deeper"
    await fill(tmp_path, 1)
    await fill(new, 2)
    async with LocalDisk.open(str(new)) as eco:
        assert await eco.state_of(Counter("c")) == 2


async def test_a_path_through_a_file_is_an_invalid_argument(tmp_path: Path) -> None:
    """A location under a file is InvalidArgumentError naming it (not NotADirectoryError)."""
    (tmp_path / "file").write_text("hello")
    location = str(tmp_path / "file" / "store")
    with pytest.raises(InvalidArgumentError, match="is a file, not a directory") as caught:
        async with LocalDisk.open(location):
            pass
    assert location in str(caught.value)


async def test_a_location_that_is_no_path_is_an_invalid_argument() -> None:
    """A location that is not a str or path is InvalidArgumentError showing it and its type."""
    with pytest.raises(InvalidArgumentError, match=r"42 \(a builtins.int\)"):
        async with LocalDisk.open(42):  # type: ignore[arg-type]
            pass


def test_the_shell_face_says_the_same_of_a_location_that_is_no_path() -> None:
    """LocalDisk.connect(42) is InvalidArgumentError too, not a TypeError from os.path."""
    with pytest.raises(InvalidArgumentError, match=r"42 \(a builtins.int\)"):
        LocalDisk.connect(42)  # type: ignore[arg-type]


def open_without_privileges(location: str) -> str:
    """Open ``location`` as a user the file permissions apply to; returns what was raised.

    Root ignores file permissions, so as root this runs in a forked child that
    drops to the user ``nobody`` first.
    """

    def attempt() -> str:
        async def opening() -> None:
            async with LocalDisk.open(location):
                pass

        try:
            trio.run(opening)
        except Exception as error:
            return f"{type(error).__name__}: {error}"
        return "opened"

    if os.geteuid() != 0:
        return attempt()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.setgid(65534)
            os.setuid(65534)
            outcome = attempt()
        except BaseException as error:
            outcome = repr(error)
        os.write(write, outcome.encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        return pipe.read()


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A directory any user can enter (pytest's tmp_path is its owner's only)."""
    directory = Path(tempfile.mkdtemp())
    directory.chmod(0o755)
    yield directory
    for path in [directory, *directory.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    shutil.rmtree(directory)


def test_a_read_only_store_says_permission_denied(shared_tmp: Path) -> None:
    """A store this user may not write is StoreAccessError saying permission denied and what
    to do, not "already open by another process"; nothing in it changes."""
    store = shared_tmp / "store"
    trio.run(fill, store, 3)
    before = snapshot(store)
    for path in store.iterdir():
        path.chmod(0o444)
    store.chmod(0o555)
    outcome = open_without_privileges(str(store))
    assert outcome.startswith("StoreAccessError: "), outcome
    assert "Permission denied" in outcome
    assert str(store) in outcome
    assert "write permission" in outcome
    assert "already open" not in outcome
    assert snapshot(store) == before


def test_a_new_store_under_a_read_only_directory_says_permission_denied(
    shared_tmp: Path,
) -> None:
    """Creating a store where this user may not write is StoreAccessError naming the path."""
    shared_tmp.chmod(0o555)
    location = str(shared_tmp / "store")
    outcome = open_without_privileges(location)
    assert outcome.startswith("StoreAccessError: "), outcome
    assert location in outcome
    assert "Permission denied" in outcome
