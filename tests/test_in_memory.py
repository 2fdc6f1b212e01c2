"""InMemory's store: the ordered key-value semantics LocalDisk's LevelDB gives, in dicts."""

from __future__ import annotations

import threading
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ecosystems._memory import MemoryStore

keys = st.builds(
    lambda tag, rest: bytes([tag]) + rest,
    st.sampled_from([ord("S"), ord("I"), ord("T"), ord("N")]),
    st.binary(max_size=3),
)
writes = st.lists(st.tuples(keys, st.none() | st.binary(max_size=2)), max_size=6)
scans = st.tuples(st.binary(max_size=2), st.none() | st.binary(max_size=3))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(writes.map(lambda w: ("write", w)), scans.map(lambda s: ("scan", s)))))
def test_scans_and_gets_match_a_sorted_dict(steps: list[tuple[str, Any]]) -> None:
    """After any writes, get and scan (prefix, start) answer as a sorted dict would."""
    store = MemoryStore()
    model: dict[bytes, bytes] = {}
    for kind, argument in steps:
        if kind == "write":
            store.write(argument, sync=False)
            for key, value in argument:
                if value is None:
                    model.pop(key, None)
                else:
                    model[key] = value
        else:
            prefix, start = argument
            expected = sorted(
                (k, v)
                for k, v in model.items()
                if k.startswith(prefix) and (start is None or k >= start)
            )
            assert list(store.scan(prefix, start=start)) == expected
    for key, value in model.items():
        assert store.get(key) == value


def test_a_scan_never_sees_half_a_batch() -> None:
    """Batches written from one thread while another scans: whole batches or none, no error."""
    store = MemoryStore()
    stop = threading.Event()
    problems: list[str] = []

    def writer() -> None:
        for batch in range(3000):
            # Each batch replaces the previous one's ten keys with ten of its own.
            operations: list[tuple[bytes, bytes | None]] = [
                (b"T%05d-%d" % (batch - 1, n), None) for n in range(10)
            ]
            operations += [(b"T%05d-%d" % (batch, n), b"x") for n in range(10)]
            store.write(operations, sync=False)
        stop.set()

    def scanner() -> None:
        while not stop.is_set():
            try:
                found = [key for key, _ in store.scan(b"T")]
            except Exception as error:
                problems.append(repr(error))
                return
            batches = {key[:6] for key in found}
            if found and (len(batches) != 1 or len(found) != 10):
                problems.append(f"half a batch: {found}")
                return

    threads = [threading.Thread(target=writer), threading.Thread(target=scanner)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert problems == []
