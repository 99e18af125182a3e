"""Balances: available and locked, per account per asset, in integer minor units.

Each account is one flat list ``[avail_0, locked_0, avail_1, locked_1, ...]`` indexed by
``2 * asset_index`` (+1 for locked), so the matching loop touches balances with plain list
indexing. The engine core moves funds directly on these rows; this module owns the rows, the
per-asset totals (deposits minus withdrawals) and the invariant checks.

Invariant (docs/design.md rule 3): for every asset, the sum over all accounts of available +
locked equals deposits minus withdrawals; no balance is ever negative; and each account's
locked amount equals what its open orders hold locked.
"""

from __future__ import annotations

from collections.abc import Iterable


class Ledger:
    __slots__ = ("assets", "index", "accounts", "totals", "fee_account")

    def __init__(self, assets: Iterable[str], fee_account: int) -> None:
        self.assets = list(assets)
        self.index = {name: i for i, name in enumerate(self.assets)}
        self.accounts: dict[int, list[int]] = {}
        self.totals = [0] * len(self.assets)
        self.fee_account = fee_account
        self.row(fee_account)

    def row(self, account: int) -> list[int]:
        """The account's balance row, created empty on first use."""
        r = self.accounts.get(account)
        if r is None:
            r = self.accounts[account] = [0] * (2 * len(self.assets))
        return r

    def deposit(self, account: int, asset: int, amount: int) -> list[int]:
        r = self.row(account)
        r[2 * asset] += amount
        self.totals[asset] += amount
        return r

    def withdraw(self, account: int, asset: int, amount: int) -> list[int] | None:
        """Take ``amount`` from available; None (and nothing changes) if it is not there."""
        r = self.accounts.get(account)
        if r is None or r[2 * asset] < amount:
            return None
        r[2 * asset] -= amount
        self.totals[asset] -= amount
        return r

    def sums(self) -> tuple[list[int], list[int]]:
        """Per asset, available and locked summed over every account now: O(accounts), for
        the operator's audit (``validate`` checks the same sums against ``totals``)."""
        columns = list(zip(*self.accounts.values(), strict=True))
        return [sum(c) for c in columns[0::2]], [sum(c) for c in columns[1::2]]

    def validate(self, locked_by_orders: dict[tuple[int, int], int]) -> None:
        """Raise AssertionError if conservation or locking is broken.

        ``locked_by_orders`` maps (account, asset index) to the sum of ``locked`` over that
        account's open orders in that asset.
        """
        n = len(self.assets)
        for account, r in self.accounts.items():
            for i in range(n):
                avail, locked = r[2 * i], r[2 * i + 1]
                if avail < 0 or locked < 0:
                    raise AssertionError(f"account {account} {self.assets[i]}: negative balance")
                want = locked_by_orders.get((account, i), 0)
                if locked != want:
                    raise AssertionError(
                        f"account {account} {self.assets[i]}: locked {locked}, orders hold {want}"
                    )
        available, locked_sums = self.sums()
        sums = [a + b for a, b in zip(available, locked_sums, strict=True)]
        for i in range(n):
            if sums[i] != self.totals[i]:
                raise AssertionError(
                    f"{self.assets[i]}: balances sum to {sums[i]}, deposits-withdrawals "
                    f"{self.totals[i]}"
                )
        for key in locked_by_orders:
            if key[0] not in self.accounts:
                raise AssertionError(f"orders lock funds of unknown account {key[0]}")
