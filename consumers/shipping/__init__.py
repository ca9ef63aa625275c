"""Shipping worker. Supported destinations: consumers.shipping.rules.SUPPORTED_COUNTRIES."""
