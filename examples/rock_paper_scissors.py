"""Rock, paper, scissors: a lobby invites two players, each sends a move, the game decides.

The seed's own example. Whatever order the messages arrive in, the outcome is
the same: ``Simulation.exhaust`` finds exactly one final world.
"""

from __future__ import annotations

from typing import Any

from pachyderm import Entity, Outbox

BEATS = {"rock": "scissors", "paper": "rock", "scissors": "paper"}


class Lobby(Entity[Any, list[Any]]):
    """Starts games: ``("start_game", alice, bob)`` opens a game and invites both."""

    entity_name = "examples.rps.Lobby"

    def init(self) -> list[Any]:
        return []

    def activate(self, message: Any, state: list[Any]) -> tuple[Outbox, list[Any]]:
        match message:
            case ("start_game", Player() as first, Player() as second):
                game = Game((self.id, len(state)))
                invites = [(first, ("invite", game)), (second, ("invite", game))]
                return [(game, ("players", first, second)), *invites], [*state, game]
        raise ValueError(f"the lobby does not understand {message!r}")


class Player(Entity[Any, dict[str, Any]]):
    """Answers an invitation with its move (a player's id names its move here)."""

    entity_name = "examples.rps.Player"

    def init(self) -> dict[str, Any]:
        return {"games": 0}

    def activate(self, message: Any, state: dict[str, Any]) -> tuple[Outbox, dict[str, Any]]:
        match message:
            case ("invite", Game() as game):
                move = str(self.id).split("-")[0]
                return [(game, ("move", self, move))], {"games": state["games"] + 1}
            case ("result", outcome):
                return [], {**state, "last": outcome}
        raise ValueError(f"a player does not understand {message!r}")


class Game(Entity[Any, dict[str, Any]]):
    """Collects both moves in any order, then tells both players the result."""

    entity_name = "examples.rps.Game"

    def init(self) -> dict[str, Any]:
        return {"players": None, "moves": {}}

    def activate(self, message: Any, state: dict[str, Any]) -> tuple[Outbox, dict[str, Any]]:
        match message:
            case ("players", first, second):
                state = {**state, "players": (first, second)}
            case ("move", Player() as player, str(move)):
                state = {**state, "moves": {**state["moves"], player: move}}
            case _:
                raise ValueError(f"a game does not understand {message!r}")
        players, moves = state["players"], state["moves"]
        if players is None or len(moves) < 2:
            return [], state  # the players and both moves may arrive in any order
        first, second = players
        if moves[first] == moves[second]:
            outcome = "draw"
        elif BEATS[moves[first]] == moves[second]:
            outcome = f"{first.id} wins"
        else:
            outcome = f"{second.id} wins"
        return [(first, ("result", outcome)), (second, ("result", outcome))], {
            **state,
            "outcome": outcome,
        }


if __name__ == "__main__":
    from simulation import Simulation

    alice, bob = Player("rock-alice"), Player("scissors-bob")
    result = Simulation.explore([(Lobby("lobby"), ("start_game", alice, bob))])
    [world] = result.final_worlds
    print(f"{result.unique_states} worlds, {len(result.final_worlds)} final world:")
    print(world.state_of(Game(("lobby", 0)))["outcome"])
