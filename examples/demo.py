"""The bank example on LocalDisk, from a plain Python program: run it twice.

    python examples/demo.py [DIRECTORY]

Each run deposits, makes two transfers (one refused for lack of funds) and
prints the balances. Run it again on the same directory: the balances go on
from where the last run left them.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ecosystems import LocalDisk
from examples.bank import Account, Credit, Transfer


def main(directory: str) -> None:
    bank = LocalDisk.connect(directory)
    alice, bob = Account("alice"), Account("bob")
    run = bank.send_sync(Account("runs"), Credit(1))  # an account that counts the runs
    print(f"run {run}: balances before: alice={bank.state_of(alice)} bob={bank.state_of(bob)}")

    bank.send_sync(alice, Credit(100))
    with bank.follow(bob) as bob_updates:
        first = Transfer(("run", run, 1))
        bank.send_sync(first, ("start", alice, bob, 30))
        _, balance = bob_updates.get(timeout=10)
        print(f"run {run}: transfer of 30 from alice to bob: bob now has {balance}")

    refused = Transfer(("run", run, 2))
    bank.send_sync(refused, ("start", bob, alice, 1_000))
    bank.settle()
    print(f"run {run}: transfer of 1000 from bob: {bank.state_of(refused)['reason']}")
    print(f"run {run}: balances after: alice={bank.state_of(alice)} bob={bank.state_of(bob)}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "demo-data")
