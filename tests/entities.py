"""Entity classes the tests share (module-level, so child processes can import them too)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pachyderm import Entity, Outbox, after, cancel


class Counter(Entity[Any, int]):
    """Counts the messages it receives."""

    def init(self) -> int:
        return 0

    def activate(self, message: Any, state: int) -> tuple[Outbox, int]:
        return [], state + 1


class Recorder(Entity[Any, list[Any]]):
    """Keeps every message it receives, in order."""

    def init(self) -> list[Any]:
        return []

    def activate(self, message: Any, state: list[Any]) -> tuple[Outbox, list[Any]]:
        state.append(message)
        return [], state


class Relay(Entity[Any, int]):
    """Forwards ``(target, message)`` to ``target``; counts what it relayed."""

    def init(self) -> int:
        return 0

    def activate(self, message: Any, state: int) -> tuple[Outbox, int]:
        target, payload = message
        return [(target, payload)], state + 1


class Keeper(Entity[Any, Any]):
    """Its state is the last message it received."""

    def activate(self, message: Any, state: Any) -> tuple[Outbox, Any]:
        return [], message


class Fragile(Entity[Any, dict[str, int]]):
    """Counts messages, mutating its state in place; ``"boom"`` raises after mutating."""

    def init(self) -> dict[str, int]:
        return {"count": 0}

    def activate(self, message: Any, state: dict[str, int]) -> tuple[Outbox, dict[str, int]]:
        state["count"] += 1
        if message == "boom":
            raise ValueError("boom")
        return [], state


class Misbehaving(Entity[Any, Any]):
    """Returns what each command names: mostly things ``activate`` must not return."""

    def activate(self, message: Any, state: Any) -> Any:
        match message:
            case "ok":
                return [(Counter("c"), "hi")], "fine"
            case "not a pair":
                return "oops"
            case "triple":
                return [], state, 1
            case "unencodable state":
                return [], object()
            case "outbox not iterable":
                return 5, state
            case "outbox item not a pair":
                return [Counter("c")], state
            case "outbox address not an entity":
                return [("c", "hi")], state
            case "unencodable outbox message":
                return [(Counter("c"), "fine"), (Counter("c"), object())], state
            case ("oversized outbox message", size):
                return [(Counter("c"), b"x" * size)], state
        raise AssertionError(f"unknown command {message!r}")


class Scripted(Entity[Any, list[Any]]):
    """Records each message's payload and sends what the message scripts.

    A message is ``(payload, ((target_id, next_message), ...))``: small systems
    with arbitrary message flows can be generated as plain data.
    """

    def init(self) -> list[Any]:
        return []

    def activate(self, message: Any, state: list[Any]) -> tuple[Outbox, list[Any]]:
        payload, sends = message
        return [(Scripted(target), sent) for target, sent in sends], [*state, payload]


class Mixer(Entity[Any, int]):
    """Deliveries that commute in some states and not in others.

    A message is ``(op, amount, sends)``: "add" adds (any two commute), "max"
    raises to ``amount``, "set" sets, "cap" adds only while the state is under
    4, "fail" raises once the state passes 5. ``sends`` (``((target_id,
    message), ...)``) go out only while the state is even: what a message
    sends can depend on what came before it.
    """

    def init(self) -> int:
        return 0

    def activate(self, message: Any, state: int) -> tuple[Outbox, int]:
        op, amount, sends = message
        outbox = [(Mixer(target), sent) for target, sent in sends] if state % 2 == 0 else []
        if op == "add":
            return outbox, state + amount
        if op == "max":
            return outbox, max(state, amount)
        if op == "set":
            return outbox, amount
        if op == "cap":
            return outbox, state + amount if state < 4 else state
        if state > 5:
            raise ValueError(f"state {state} is past 5")
        return outbox, state


class Alarm(Entity[Any, list[Any]]):
    """Sets, replaces and cancels timers on command; records what rings."""

    entity_name = "tests.timers.Alarm"

    def init(self) -> list[Any]:
        return []

    def activate(self, message: Any, state: list[Any]) -> tuple[Outbox, list[Any]]:
        match message:
            case ("set", delay, payload):
                return [after(delay, self, ("ring", payload))], state
            case ("set named", name, delay, payload):
                return [after(delay, self, ("ring", payload), name=name)], state
            case ("cancel", name):
                return [cancel(name)], state
            case ("set and cancel", name):
                return [after(1, self, ("ring", "set"), name=name), cancel(name)], state
            case ("cancel and set", name):
                return [cancel(name), after(1, self, ("ring", "set"), name=name)], state
            case ("set for", target, delay, payload):
                return [after(delay, target, payload)], state
            case ("ring", payload):
                return [], [*state, payload]
            case ("bad delay", delay):
                return [after(delay, self, "never")], state
            case ("longest delay",):
                return [after(timedelta.max, self, "never")], state
        raise AssertionError(f"unknown command {message!r}")


class Arrivals(Entity[Any, dict[str, int]]):
    """Keeps a dict of what arrived, in arrival order: its key order is the history."""

    entity_name = "tests.Arrivals"

    def init(self) -> dict[str, int]:
        return {}

    def activate(self, message: Any, state: dict[str, int]) -> tuple[Outbox, dict[str, int]]:
        return [], {**state, str(message): len(state)}


class Timed(Entity[Any, list[Any]]):
    """Like Scripted, with timers: a message is ``(payload, sends, timers, cancels)``.

    ``sends``: ``((target_id, message), ...)``; ``timers``: ``((name, delay,
    target_id, message), ...)`` (name may be None); ``cancels``: names. Small
    systems with messages, timers and cancellations can be generated as data.
    """

    entity_name = "tests.Timed"

    def init(self) -> list[Any]:
        return []

    def activate(self, message: Any, state: list[Any]) -> tuple[Outbox, list[Any]]:
        payload, sends, timers, cancels = message
        outbox: list[Any] = [(Timed(target), sent) for target, sent in sends]
        outbox += [
            after(delay, Timed(target), sent, name=name) for name, delay, target, sent in timers
        ]
        outbox += [cancel(name) for name in cancels]
        return outbox, [*state, payload]


class Server(Entity[Any, int]):
    """Answers every request with a pong; counts requests."""

    entity_name = "tests.Server"

    def init(self) -> int:
        return 0

    def activate(self, message: Any, state: int) -> tuple[Outbox, int]:
        _, client = message
        return [(client, "pong")], state + 1


class Client(Entity[Any, str]):
    """Asks the server and gives up after a timeout: a reply racing a timer."""

    entity_name = "tests.Client"

    def init(self) -> str:
        return "idle"

    def activate(self, message: Any, state: str) -> tuple[Outbox, str]:
        match message, state:
            case ("ask", server), "idle":
                return [(server, ("ping", self)), after(5, self, "timeout", name="t")], "waiting"
            case "pong", "waiting":
                return [cancel("t")], "answered"
            case "timeout", "waiting":
                return [], "timed out"
            case "pong", "timed out":
                return [], "timed out, late reply"
        raise AssertionError(f"{state!r} cannot handle {message!r}")


class Voter(Entity[Any, str]):
    """Votes once: tells the collector its own address."""

    entity_name = "tests.symmetry.Voter"

    def init(self) -> str:
        return "idle"

    def activate(self, message: Any, state: str) -> tuple[Outbox, str]:
        if state == "voted":
            return [], state
        return [(Recorder("ballot box"), ("vote", self))], "voted"


def define_tally(name: str, former: tuple[str, ...] = ()) -> type[Entity[str, int]]:
    """A counter class named ``name``: each call defines the same class again (as a REPL
    or a reload does), maybe under another name, with ``former`` names."""

    class Tally(Entity[str, int]):
        entity_name = name
        former_names = former

        def init(self) -> int:
            return 0

        def activate(self, message: str, state: int) -> tuple[Outbox, int]:
            return [], state + 1

    return Tally
