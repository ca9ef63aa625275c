"""Notifications worker: renders and records each outgoing e-mail once, in schema `notifications`.

The `emails` table is the source of truth: one row per (saga, template), so a re-sent command
records nothing new and reports the e-mail recorded the first time. There is no SMTP delivery
yet: it would be a loop sending recorded rows outside the command's transaction (an SMTP call
cannot be rolled back) and marking each as delivered.

Documented test values: a recipient at the reserved `.invalid` top-level domain (RFC 2606, e.g.
"someone@example.invalid") is undeliverable, so SendWelcomeEmail fails as a business rule.
"""
