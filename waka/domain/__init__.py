"""The pure domain: aggregates whose event streams are the ledger. No I/O lives here."""
