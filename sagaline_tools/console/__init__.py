"""The operations console (`sagaline console`): web pages for sagas, parked messages and timers.

Server-rendered (Starlette + Jinja2) with a little progressive enhancement (static/console.js,
served by the process: no CDN). It reads PostgreSQL and RabbitMQ with credentials of its own
(deploy/postgres/roles.sql, deploy/rabbitmq/make_definitions.py), keeps an index of parked
messages (index.py), and acts through the same code as the CLI (orchestrator.admin, the
parking-queue tools, replay jobs), writing the same `operator:<name>` history and audit rows.
"""
