"""The Simulation ecosystem: deterministic runs and exhaustive exploration (not built yet)."""

__all__: list[str] = []
