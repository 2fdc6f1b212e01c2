"""Where entities live: ``LocalDisk`` (LevelDB) and ``InMemory``, with the same semantics.

    >>> from ecosystems import LocalDisk
    >>> LocalDisk.send_sync(counter, "increment")        # doctest: +SKIP

Both are :class:`pachyderm.EcosystemKind` values: a shell face (``send_sync``,
``send``, ``follow``, ``participate``, ...) and a trio face (``open``).
"""

from ecosystems._in_memory import InMemory
from ecosystems._local_disk import LocalDisk

__all__ = ["InMemory", "LocalDisk"]
