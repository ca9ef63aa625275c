"""TLS for the broker and the database connections, from settings.

RabbitMQ: TLS is on when AMQP_URL is an `amqps://` URL. The broker's certificate is verified
(chain and host name) against SAGALINE_AMQP_CA_FILE, or the system's CAs when unset;
SAGALINE_AMQP_CERT_FILE and SAGALINE_AMQP_KEY_FILE add a client certificate (mutual TLS).
`amqp_connect_options` feeds aio-pika's connect, `broker_security` FastStream's RabbitBroker.
(aio-pika also reads `cafile`, `certfile` and `keyfile` from an amqps:// URL's query, which keeps
tools that only take a URL working; an explicit context from these settings wins.)

PostgreSQL: SAGALINE_DB_SSLMODE takes libpq's modes (disable, allow, prefer, require,
verify-ca, verify-full) with SAGALINE_DB_SSLROOTCERT, SAGALINE_DB_SSLCERT and
SAGALINE_DB_SSLKEY. Unset, the driver's own defaults apply (libpq's PGSSLMODE/PGSSLROOTCERT/
PGSSLCERT/PGSSLKEY environment variables, else `prefer`). `db_connect_args` feeds both
SQLAlchemy's engine (`connect_args`) and direct asyncpg connections: sslmode cannot travel in
DATABASE_URL, because SQLAlchemy hands URL parameters to asyncpg.connect() as arguments and
asyncpg has no `sslmode` argument.

Nothing here reads files at import time; a wrong combination raises TlsSettingsError with one
line naming the variables involved (never their values).
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import urlsplit

from faststream.security import BaseSecurity

from sagaline.settings import Settings

DB_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_MIN_TLS = ssl.TLSVersion.TLSv1_2


class TlsSettingsError(ValueError):
    """TLS settings that contradict each other (the message names variables, not values)."""


def amqp_uses_tls(settings: Settings) -> bool:
    return urlsplit(settings.amqp_url).scheme.lower() == "amqps"


def amqp_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The client context for an amqps:// broker; None for plain amqp://."""
    files = (settings.amqp_ca_file, settings.amqp_cert_file, settings.amqp_key_file)
    if not amqp_uses_tls(settings):
        if any(files):
            raise TlsSettingsError(
                "SAGALINE_AMQP_CA_FILE/CERT_FILE/KEY_FILE are set but AMQP_URL is not amqps://"
            )
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.amqp_ca_file)
    context.minimum_version = _MIN_TLS
    _client_certificate(
        context,
        settings.amqp_cert_file,
        settings.amqp_key_file,
        ("SAGALINE_AMQP_CERT_FILE", "SAGALINE_AMQP_KEY_FILE"),
    )
    return context


def amqp_connect_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for aio_pika.connect/connect_robust."""
    context = amqp_ssl_context(settings)
    return {} if context is None else {"ssl_context": context}


def broker_security(settings: Settings) -> BaseSecurity | None:
    """`security=` for FastStream's RabbitBroker, or None for plain AMQP."""
    context = amqp_ssl_context(settings)
    if context is None:
        return None
    return BaseSecurity(ssl_context=context, use_ssl=True)


def db_ssl(settings: Settings) -> ssl.SSLContext | str | bool | None:
    """asyncpg's `ssl` argument; None leaves the driver's defaults (PGSSLMODE, else prefer)."""
    mode = settings.db_sslmode
    root, cert, key = settings.db_sslrootcert, settings.db_sslcert, settings.db_sslkey
    if mode is None:
        if root or cert or key:
            raise TlsSettingsError(
                "SAGALINE_DB_SSLROOTCERT/SSLCERT/SSLKEY are set but SAGALINE_DB_SSLMODE is not"
            )
        return None
    if mode == "disable":
        return False
    if mode in ("allow", "prefer"):
        if root or cert or key:
            raise TlsSettingsError(
                f"SAGALINE_DB_SSLMODE={mode} never verifies or presents certificates;"
                " use require, verify-ca or verify-full with SAGALINE_DB_SSL* files"
            )
        return mode  # opportunistic TLS with a plaintext fallback: asyncpg's own handling
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=root)
    context.minimum_version = _MIN_TLS
    if mode == "require":
        # As libpq: `require` encrypts without verifying, unless a root certificate is given,
        # in which case the chain is verified as with verify-ca.
        context.check_hostname = False
        if root is None:
            context.verify_mode = ssl.CERT_NONE
    elif mode == "verify-ca":
        context.check_hostname = False
    _client_certificate(context, cert, key, ("SAGALINE_DB_SSLCERT", "SAGALINE_DB_SSLKEY"))
    return context


def db_connect_args(settings: Settings) -> dict[str, Any]:
    """`connect_args` for SQLAlchemy's asyncpg engine, or keyword arguments for asyncpg.connect."""
    value = db_ssl(settings)
    return {} if value is None else {"ssl": value}


def _client_certificate(
    context: ssl.SSLContext, cert: str | None, key: str | None, names: tuple[str, str]
) -> None:
    if cert:
        context.load_cert_chain(cert, key)
    elif key:
        raise TlsSettingsError(f"{names[1]} is set without {names[0]}")
