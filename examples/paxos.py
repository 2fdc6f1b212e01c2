"""Single-decree Paxos as a register, checked in every delivery order.

Three servers and two clients, as in Stateright's Paxos example (a leader
waits for every peer, as there; a leader that settles for one peer, as if it
counted itself towards a majority but forgot what it had itself accepted, is
the bug the tests make the search find): each client
puts its own value through one server, then reads the register through
another. A server that is put to leads a round: it prepares a ballot with
its peers, proposes the value of the highest ballot they had accepted (or
its own), and once a majority accepted, decides and tells everyone. A get is
answered only by a server that knows the decision. Checked in every world:
servers that decided agree, and a client reads only the decided value.

    python examples/paxos.py
"""

from __future__ import annotations

from typing import Any, cast

from pachyderm import Entity, Outbox
from simulation import Exploration, Simulation, World

SERVERS = 3
PEERS = SERVERS - 1  # a leader waits for every peer, as Stateright's example does
Ballot = tuple[int, int]  # (round, rank of the leader)
Proposal = tuple[int, int, str]  # (request id, client number, value)


class Server(Entity[Any, dict[str, Any]]):
    """A Paxos server: leader of its own rounds, acceptor of everyone's. Its id is its rank."""

    entity_name = "examples.paxos.Server"
    quorum = PEERS  # peers a leader hears from before going on

    @property
    def rank(self) -> int:
        return cast(int, self.id)

    def peers(self) -> list[Server]:
        return [type(self)(rank) for rank in range(SERVERS) if rank != self.rank]

    def init(self) -> dict[str, Any]:
        return {
            "ballot": (0, 0),
            "proposal": None,
            "prepares": {},
            "accepts": [],
            "accepted": None,
            "decided": False,
        }

    def activate(self, message: Any, state: dict[str, Any]) -> tuple[Outbox, dict[str, Any]]:
        kind = message[0]
        if kind == "put" and not state["decided"] and state["proposal"] is None:
            _, request, client, value = message
            ballot = (state["ballot"][0] + 1, self.rank)
            state = {
                **state,
                "ballot": ballot,
                "proposal": (request, client, value),
                "prepares": {},
                "accepts": [],
            }
            return [(peer, ("prepare", ballot, self.rank)) for peer in self.peers()], state
        if kind == "get" and state["decided"]:
            _, request, client = message
            _, (_, _, value) = state["accepted"]
            return [(Client(client), ("get_ok", request, value))], state
        if kind == "prepare" and tuple(state["ballot"]) < tuple(message[1]):
            _, ballot, leader = message
            reply = ("prepared", ballot, state["accepted"], self.rank)
            return [(type(self)(leader), reply)], {**state, "ballot": ballot}
        if kind == "prepared" and message[1] == state["ballot"] and not state["decided"]:
            _, ballot, last_accepted, peer = message
            prepares = {**state["prepares"], peer: last_accepted}
            state = {**state, "prepares": prepares}
            if len(prepares) < self.quorum:
                return [], state
            accepted = [entry for entry in prepares.values() if entry is not None]
            proposal = max(accepted)[1] if accepted else state["proposal"]
            state = {
                **state,
                "proposal": proposal,
                "accepted": (ballot, proposal),
                "accepts": [],
            }
            return [(peer, ("accept", ballot, proposal, self.rank)) for peer in self.peers()], state
        if kind == "accept" and tuple(state["ballot"]) <= tuple(message[1]):
            _, ballot, proposal, leader = message
            if state["decided"]:
                return [], state
            return [(type(self)(leader), ("accepted", ballot, self.rank))], {
                **state,
                "ballot": ballot,
                "accepted": (ballot, proposal),
            }
        if kind == "accepted" and message[1] == state["ballot"] and not state["decided"]:
            _, ballot, peer = message
            accepts = sorted({*state["accepts"], peer})
            state = {**state, "accepts": accepts}
            if len(accepts) < self.quorum:
                return [], state
            request, client, _ = state["proposal"]
            decided = ("decided", ballot, state["proposal"])
            told = [(peer, decided) for peer in self.peers()]
            return [*told, (Client(client), ("put_ok", request))], {**state, "decided": True}
        if kind == "decided":
            _, ballot, proposal = message
            return [], {**state, "ballot": ballot, "accepted": (ballot, proposal), "decided": True}
        return [], state


class Client(Entity[Any, dict[str, Any]]):
    """Puts its value through one server, then reads through the next one."""

    entity_name = "examples.paxos.Client"

    def init(self) -> dict[str, Any]:
        return {"phase": "idle", "servers": [], "read": None}

    def activate(self, message: Any, state: dict[str, Any]) -> tuple[Outbox, dict[str, Any]]:
        number = cast(int, self.id)
        if message[0] == "start":  # ("start", the servers' addresses)
            servers = message[1]
            put = ("put", 2 * number, number, "ABCDEFGH"[number])
            first = servers[number % len(servers)]
            return [(first, put)], {**state, "phase": "putting", "servers": servers}
        if message[0] == "put_ok":
            servers = state["servers"]
            get = ("get", 2 * number + 1, number)
            return [(servers[(number + 1) % len(servers)], get)], {**state, "phase": "getting"}
        if message[0] == "get_ok":
            return [], {**state, "phase": "done", "read": message[2]}
        return [], state


def start(clients: int = 2, server: type[Server] = Server) -> list[tuple[Any, Any]]:
    """Every client starts at once; ``server`` is the servers' class (a broken one, say)."""
    servers = [server(rank) for rank in range(SERVERS)]
    return [(Client(n), ("start", servers)) for n in range(clients)]


def decided_values(world: World) -> set[str]:
    """The values decided by the servers in this world."""
    values = set()
    for address, state in world.entities.items():
        if isinstance(address, Server) and state["decided"]:
            _, (_, _, value) = state["accepted"]
            values.add(value)
    return values


def consistent(world: World) -> bool:
    """At most one value is decided, and a client reads only that value."""
    decided = decided_values(world)
    reads = {
        state["read"]
        for address, state in world.entities.items()
        if isinstance(address, Client) and state["read"] is not None
    }
    return len(decided) <= 1 and reads <= decided


def check(clients: int = 2, server: type[Server] = Server, **options: Any) -> Exploration:
    """Explore every delivery order of the register with ``clients`` clients."""
    return Simulation.explore(start(clients, server), invariants=[consistent], **options)


if __name__ == "__main__":
    result = check()
    print(f"single-decree Paxos, 3 servers, 2 clients: {result!r}")
