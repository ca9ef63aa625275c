"""Operator accounts, login throttling and sessions, in the console's tables.

A session is a random token in a cookie (HttpOnly, Secure, SameSite=Strict); the database
keeps only its SHA-256, so a copy of the sessions table logs nobody in. Each session has its
own CSRF token, which every form that acts must send back. Failed logins are rows: more than
MAX_FAILURES_PER_NAME for one name, or MAX_FAILURES_PER_CLIENT from one address, within
THROTTLE_WINDOW refuse further attempts (even a right password) until the window passes.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from sagaline_tools.console.passwords import dummy_verify, hash_password, verify_password
from sagaline_tools.console.rights import ROLES
from sagaline_tools.console.tables import login_failures, operators, sessions

Clock = Callable[[], datetime]

THROTTLE_WINDOW = timedelta(minutes=15)
MAX_FAILURES_PER_NAME = 5
MAX_FAILURES_PER_CLIENT = 30
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")


class AccountError(Exception):
    """A refusal with a message fit to show (never which of name or password was wrong)."""


class Throttled(AccountError):
    pass


@dataclass(frozen=True)
class Session:
    operator: str
    role: str
    csrf_token: str
    expires_at: datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise AccountError(
            "an operator name is 1-100 letters, digits, '.', '_', '@' or '-' (no spaces)"
        )
    return name


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Accounts:
    def __init__(
        self, engine: AsyncEngine, clock: Clock = utcnow, session_ttl: timedelta | None = None
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.session_ttl = session_ttl or timedelta(hours=8)

    async def add(self, name: str, role: str, password: str, *, replace: bool = False) -> None:
        check_name(name)
        if role not in ROLES:
            raise AccountError(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
        hashed = await asyncio.to_thread(hash_password, password)
        values = {"name": name, "role": role, "password_hash": hashed, "created_at": self.clock()}
        stmt = pg_insert(operators).values(values)
        if replace:
            stmt = stmt.on_conflict_do_update(
                index_elements=["name"],
                set_={"role": role, "password_hash": hashed, "disabled_at": None},
            )
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=["name"])
        async with self.engine.begin() as conn:
            added = (await conn.execute(stmt)).rowcount
        if not added:
            raise AccountError(f"operator {name} exists (--replace to change role and password)")

    async def disable(self, name: str) -> None:
        async with self.engine.begin() as conn:
            done = await conn.execute(
                update(operators).where(operators.c.name == name).values(disabled_at=self.clock())
            )
            await conn.execute(delete(sessions).where(sessions.c.operator == name))
        if not done.rowcount:
            raise AccountError(f"no operator {name}")

    async def roster(self) -> list[tuple[str, str, bool]]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(operators).order_by(operators.c.name))).all()
        return [(r.name, r.role, r.disabled_at is None) for r in rows]

    async def login(self, name: str, password: str, client: str) -> tuple[str, Session]:
        """A new session token for a right name and password; throttled after failures."""
        now = self.clock()
        client = client[:64]
        await self._check_throttle(name, client, now)
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(operators).where(
                        operators.c.name == name[:100], operators.c.disabled_at.is_(None)
                    )
                )
            ).first()
        if row is None:
            await asyncio.to_thread(dummy_verify, password)
            ok = False
        else:
            ok = await asyncio.to_thread(verify_password, row.password_hash, password)
        if not ok or row is None:
            async with self.engine.begin() as conn:
                await conn.execute(
                    login_failures.insert().values(name=name[:100], client=client, at=now)
                )
            raise AccountError("unknown operator or wrong password")
        token = secrets.token_urlsafe(32)
        session = Session(row.name, row.role, secrets.token_urlsafe(32), now + self.session_ttl)
        async with self.engine.begin() as conn:
            await conn.execute(
                sessions.insert().values(
                    token_hash=token_hash(token), operator=row.name,
                    csrf_token=session.csrf_token, created_at=now, expires_at=session.expires_at,
                )
            )  # fmt: skip
            await conn.execute(delete(sessions).where(sessions.c.expires_at < now))
        return token, session

    async def _check_throttle(self, name: str, client: str, now: datetime) -> None:
        since = now - THROTTLE_WINDOW
        async with self.engine.connect() as conn:
            by_name = await conn.scalar(
                select(func.count()).where(
                    login_failures.c.name == name[:100], login_failures.c.at > since
                )
            )
            by_client = await conn.scalar(
                select(func.count()).where(
                    login_failures.c.client == client, login_failures.c.at > since
                )
            )
        if (by_name or 0) >= MAX_FAILURES_PER_NAME or (by_client or 0) >= MAX_FAILURES_PER_CLIENT:
            minutes = int(THROTTLE_WINDOW.total_seconds() // 60)
            raise Throttled(f"too many failed logins; try again in {minutes} minutes")

    async def session(self, token: str) -> Session | None:
        if not token or len(token) > 100:
            return None
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(sessions, operators.c.role)
                    .join(operators, operators.c.name == sessions.c.operator)
                    .where(
                        sessions.c.token_hash == token_hash(token),
                        sessions.c.expires_at > self.clock(),
                        operators.c.disabled_at.is_(None),
                    )
                )
            ).first()
        if row is None:
            return None
        return Session(row.operator, row.role, row.csrf_token, row.expires_at)

    async def logout(self, token: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(delete(sessions).where(sessions.c.token_hash == token_hash(token)))
