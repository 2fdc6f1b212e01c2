"""Where entities live: ``LocalDisk``, ``InMemory`` and ``Postgres``, with the same semantics.

    >>> from ecosystems import LocalDisk
    >>> LocalDisk.send_sync(counter, "increment")        # doctest: +SKIP

Both are :class:`pachyderm.EcosystemKind` values: a shell face (``send_sync``,
``send``, ``follow``, ``participate``, ...) and a trio face (``open``).
"""

from ecosystems._in_memory import InMemory
from ecosystems._local_disk import LocalDisk
from ecosystems._postgres import Postgres

__all__ = ["InMemory", "LocalDisk", "Postgres"]
