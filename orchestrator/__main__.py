"""`python -m orchestrator`: the orchestrator process (container entry point)."""

from __future__ import annotations

import sys

from pydantic import ValidationError

from orchestrator.app import build_app
from sagaline.logs import configure_logging
from sagaline.service import run
from sagaline.settings import Settings, settings_problems
from sagaline.startup import require_schema
from sagaline.telemetry import configure_tracing


def main() -> None:
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"invalid settings: {settings_problems(exc)}", file=sys.stderr)
        sys.exit(2)
    configure_logging(settings.log_level, service="orchestrator")
    require_schema(settings, "orchestrator", temporary=True)
    configure_tracing("orchestrator")
    run(build_app(settings), settings)


if __name__ == "__main__":
    main()
