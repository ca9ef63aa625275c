"""Inventory worker. `consumers.inventory.handlers.seed_stock` fills stock for demos and tests."""
