"""`python -m consumers <worker>`: run one worker until SIGINT/SIGTERM."""

from __future__ import annotations

import sys

from pydantic import ValidationError

from consumers.registry import WORKERS, build_app
from consumers.settings import WorkerSettings
from sagaline.logs import configure_logging
from sagaline.service import run
from sagaline.settings import Settings, settings_problems
from sagaline.startup import require_schema
from sagaline.telemetry import configure_tracing


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    choices = "|".join(WORKERS)
    if len(args) != 1:
        print(f"usage: python -m consumers <{choices}>", file=sys.stderr)
        return 2
    name = args[0]
    if name not in WORKERS:
        print(f"unknown worker {name[:60]!r}; expected one of: {choices}", file=sys.stderr)
        return 2
    try:
        settings = Settings()
        config = WorkerSettings()
    except ValidationError as exc:
        print(f"invalid settings: {settings_problems(exc)}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, service=name)
    require_schema(settings, name)
    configure_tracing(name)
    run(build_app(name, settings, config), settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
