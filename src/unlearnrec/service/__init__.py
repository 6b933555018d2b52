"""The deletion service (issue 14): a durable ledger of erasure requests, and, on top of it, the server."""

from unlearnrec.service.ledger import IdempotencyConflict, Ledger, LedgerError, Receipt

__all__ = ["IdempotencyConflict", "Ledger", "LedgerError", "Receipt"]
