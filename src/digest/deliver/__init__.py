"""Deliver: transports (file, smtp, sendgrid, memory) behind one interface, and the ledger."""
