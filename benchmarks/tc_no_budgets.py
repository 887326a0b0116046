"""A ``--plugin`` module for ``benchmarks/flood_wire.py --no-budgets``: switches the per-peer control-message
budgets off (every allowance unlimited), so that only the read loop's yield protects the other peers."""

from torrentcore.peer import budget

budget.ALLOWANCES = {kind: budget.Allowance(10**12, 1e12) for kind in budget.ALLOWANCES}
