"""Documents worker. Approval tiers live in documents.approval_tiers (seeded by migration 0004,
editable with SQL); DocumentMetadata.failure_drill makes a chosen step fail on purpose."""
