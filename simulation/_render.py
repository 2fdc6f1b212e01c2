"""Traces for people: numbered text, and Mermaid sequence diagrams."""

from __future__ import annotations

from collections.abc import Sequence

from pachyderm.errors import shown
from simulation._step import Action

__all__ = ["counted", "sequence_diagram", "trace_text"]


def counted(number: int, noun: str) -> str:
    """``number`` of ``noun``, plural but for one: "1 step", "1,024 worlds"."""
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def trace_text(trace: Sequence[Action]) -> str:
    """One numbered line per step."""
    return "\n".join(f"{number}. {action}" for number, action in enumerate(trace, 1))


# Mermaid reads ";" as the end of a statement and "#" as the start of an entity code, and
# keeps quotes as written: both are written as entity codes, which it shows as themselves.
_MERMAID = str.maketrans({"#": "#35;", ";": "#59;", "\n": " ", "\r": " "})


def _participant(name: str, names: dict[str, str]) -> str:
    if name not in names:
        names[name] = f"p{len(names)}"
    return names[name]


def sequence_diagram(trace: Sequence[Action]) -> str:
    """A Mermaid ``sequenceDiagram`` of the trace: paste it into any Mermaid renderer."""
    names: dict[str, str] = {}
    arrows = []
    for action in trace:
        text = shown(action.message).translate(_MERMAID)
        timer = action.timer
        if timer is not None:
            owner = _participant(repr(timer.owner), names)
            recipient = _participant(repr(timer.recipient), names)
            name = "" if timer.name is None else f" {timer.name}"
            arrows.append(f"    {owner}--){recipient}: {text} (timer{name} at {timer.due:g})")
            continue
        item = action.envelope
        assert item is not None
        sender = _participant("outside" if item.sender is None else repr(item.sender), names)
        recipient = _participant(repr(item.recipient), names)
        if action.kind == "deliver":
            arrows.append(f"    {sender}->>{recipient}: {text}")
        elif action.kind == "drop":
            arrows.append(f"    {sender}-x{recipient}: {text} (lost)")
        else:
            arrows.append(f"    Note over {sender},{recipient}: {text} duplicated")
    if not trace:
        arrows.append(f"    Note over {_participant('outside', names)}: no steps: the first world")
    lines = ["sequenceDiagram"]
    lines.extend(
        f"    participant {alias} as {name.translate(_MERMAID)}" for name, alias in names.items()
    )
    return "\n".join(lines + arrows)
