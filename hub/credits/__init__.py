"""The money pages: a member's credits, usage and earnings; the admin's prices, limits, usage and ledger."""
