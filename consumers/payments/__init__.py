"""Payments worker. Documented test values: card token "tok_declined" is always declined."""
