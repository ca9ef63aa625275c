"""Console output shared by every command: one red line for errors, JSON for data.

Commands raise `CliError` for anything a user can fix (bad arguments, unreachable services);
the root group turns it into a single line on stderr and an exit code, never a traceback.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from rich.console import Console
from rich.markup import escape


class CliError(Exception):
    """A failure the user can act on; printed as one line, exits with `exit_code`."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def stdout() -> Console:
    # Built per call so that the console follows sys.stdout when tests or callers swap it.
    return Console(highlight=False)


def stderr() -> Console:
    return Console(stderr=True, highlight=False)


def error_line(message: str) -> None:
    """Print one red line on stderr. Newlines in the message are folded so it stays one line."""
    text = " ".join(message.split())
    # soft_wrap: a long message stays one line instead of being wrapped at the terminal width.
    stderr().print(f"[bold red]error:[/] [red]{escape(text)}[/]", soft_wrap=True)


def warning_line(message: str) -> None:
    stderr().print(f"[yellow]warning:[/] {escape(' '.join(message.split()))}", soft_wrap=True)


def print_json(data: Any) -> None:
    """Machine-readable output on stdout: plain JSON, no colour, no wrapping."""
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def safe_url(url: str) -> str:
    """A URL fit for a message: the password replaced, everything else kept."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return "<unparseable url>"
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


def one_line(exc: BaseException) -> str:
    """The first line of an exception's text, or its type name when it has none."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return first or type(exc).__name__
