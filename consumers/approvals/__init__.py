"""Approvals worker: records the approval requests the document saga sends to each role."""
