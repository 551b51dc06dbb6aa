"""Two files for `bench lsp`'s ghost-text measures, written for it (so no model was trained on
them): ordinary application code of the kind a person writes, with names that recur."""

from __future__ import annotations

# jump-to-line cursors: the ends of its code lines
LEDGER = '''"""A small double-entry ledger: accounts, journal entries and the reports built from them."""

from __future__ import annotations

import csv
import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path


class LedgerError(ValueError):
    """An entry that would leave the books out of balance, or an unknown account."""


@dataclass(frozen=True)
class Account:
    code: str
    name: str
    kind: str  # asset, liability, equity, income or expense

    def is_debit_normal(self) -> bool:
        return self.kind in ("asset", "expense")


@dataclass
class Posting:
    account: str
    amount: Decimal
    memo: str = ""


@dataclass
class Entry:
    date: dt.date
    description: str
    postings: list[Posting] = field(default_factory=list)

    def total(self) -> Decimal:
        return sum((p.amount for p in self.postings), Decimal("0"))

    def accounts(self) -> set[str]:
        return {p.account for p in self.postings}


class Ledger:
    def __init__(self, accounts: list[Account]) -> None:
        self.accounts = {account.code: account for account in accounts}
        self.entries: list[Entry] = []

    def post(self, entry: Entry) -> None:
        unknown = entry.accounts() - self.accounts.keys()
        if unknown:
            raise LedgerError(f"unknown accounts: {', '.join(sorted(unknown))}")
        if entry.total() != 0:
            raise LedgerError(f"entry {entry.description!r} is out of balance by {entry.total()}")
        self.entries.append(entry)

    def balance(self, code: str, until: dt.date | None = None) -> Decimal:
        total = Decimal("0")
        for entry in self.entries:
            if until is not None and entry.date > until:
                continue
            for posting in entry.postings:
                if posting.account == code:
                    total += posting.amount
        return total

    def balances(self, until: dt.date | None = None) -> dict[str, Decimal]:
        totals: dict[str, Decimal] = defaultdict(Decimal)
        for entry in self.entries:
            if until is not None and entry.date > until:
                continue
            for posting in entry.postings:
                totals[posting.account] += posting.amount
        return dict(totals)

    def trial_balance(self, until: dt.date | None = None) -> list[tuple[str, Decimal, Decimal]]:
        rows = []
        for code, amount in sorted(self.balances(until).items()):
            account = self.accounts[code]
            if account.is_debit_normal():
                rows.append((account.name, amount, Decimal("0")))
            else:
                rows.append((account.name, Decimal("0"), -amount))
        return rows

    def income_statement(self, start: dt.date, end: dt.date) -> dict[str, Decimal]:
        income = Decimal("0")
        expenses = Decimal("0")
        for entry in self.entries:
            if not start <= entry.date <= end:
                continue
            for posting in entry.postings:
                kind = self.accounts[posting.account].kind
                if kind == "income":
                    income -= posting.amount
                elif kind == "expense":
                    expenses += posting.amount
        return {"income": income, "expenses": expenses, "net": income - expenses}

    def export_csv(self, path: Path) -> int:
        count = 0
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["date", "description", "account", "amount", "memo"])
            for entry in self.entries:
                for posting in entry.postings:
                    writer.writerow([entry.date.isoformat(), entry.description, posting.account, posting.amount, posting.memo])
                    count += 1
        return count

    def import_csv(self, path: Path) -> int:
        grouped: dict[tuple[str, str], list[Posting]] = defaultdict(list)
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                key = (row["date"], row["description"])
                grouped[key].append(Posting(row["account"], Decimal(row["amount"]), row.get("memo", "")))
        for (date, description), postings in grouped.items():
            self.post(Entry(dt.date.fromisoformat(date), description, postings))
        return len(grouped)
'''

# typed down from `TYPING_START_LINE` on, character by character
INVENTORY = '''"""Stock levels for a few warehouses: receipts, shipments, transfers and reorder points."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Item:
    sku: str
    name: str
    unit_cost: float
    reorder_point: int = 0


@dataclass
class Warehouse:
    name: str
    stock: dict[str, int] = field(default_factory=dict)

    def quantity(self, sku: str) -> int:
        return self.stock.get(sku, 0)


class Inventory:
    def __init__(self, items: list[Item], warehouses: list[str]) -> None:
        self.items = {item.sku: item for item in items}
        self.warehouses = {name: Warehouse(name) for name in warehouses}
        self.history: list[dict] = []

    def receive(self, warehouse: str, sku: str, quantity: int) -> None:
        if quantity <= 0:
            raise ValueError("a receipt needs a positive quantity")
        store = self.warehouses[warehouse]
        store.stock[sku] = store.quantity(sku) + quantity
        self.history.append({"kind": "receive", "warehouse": warehouse, "sku": sku, "quantity": quantity})

    def ship(self, warehouse: str, sku: str, quantity: int) -> None:
        store = self.warehouses[warehouse]
        available = store.quantity(sku)
        if quantity > available:
            raise ValueError(f"only {available} of {sku} in {warehouse}")
        store.stock[sku] = available - quantity
        self.history.append({"kind": "ship", "warehouse": warehouse, "sku": sku, "quantity": quantity})

    def transfer(self, source: str, target: str, sku: str, quantity: int) -> None:
        self.ship(source, sku, quantity)
        self.receive(target, sku, quantity)

    def total_quantity(self, sku: str) -> int:
        total = 0
        for store in self.warehouses.values():
            total += store.quantity(sku)
        return total

    def stock_value(self) -> float:
        value = 0.0
        for store in self.warehouses.values():
            for sku, quantity in store.stock.items():
                value += quantity * self.items[sku].unit_cost
        return value

    def below_reorder_point(self) -> list[Item]:
        low = []
        for sku, item in self.items.items():
            if self.total_quantity(sku) < item.reorder_point:
                low.append(item)
        return low

    def report(self) -> list[dict]:
        rows = []
        for sku, item in sorted(self.items.items()):
            quantity = self.total_quantity(sku)
            rows.append({
                "sku": sku,
                "name": item.name,
                "quantity": quantity,
                "value": round(quantity * item.unit_cost, 2),
                "reorder": quantity < item.reorder_point,
            })
        return rows

    def save(self, path: Path) -> None:
        data = {
            "items": [item.__dict__ for item in self.items.values()],
            "stock": {name: store.stock for name, store in self.warehouses.items()},
            "history": self.history,
        }
        path.write_text(json.dumps(data, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> "Inventory":
        data = json.loads(path.read_text(encoding="utf-8"))
        inventory = cls([Item(**item) for item in data["items"]], list(data["stock"]))
        for name, stock in data["stock"].items():
            inventory.warehouses[name].stock.update(stock)
        inventory.history = data["history"]
        return inventory
'''

# the typing starts here (0-based): the file's header and first methods are there already
TYPING_START_LINE = INVENTORY.split("\n").index("    def total_quantity(self, sku: str) -> int:")
