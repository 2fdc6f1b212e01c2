"""Entity classes the tests share (module-level, so child processes can import them too)."""

from __future__ import annotations

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
        raise AssertionError(f"unknown command {message!r}")
