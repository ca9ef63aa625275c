"""`python -m orchestrator`: the orchestrator process (container entry point)."""

from __future__ import annotations

from orchestrator.app import build_app
from sagaline.logs import configure_logging
from sagaline.service import run
from sagaline.settings import Settings
from sagaline.startup import require_schema
from sagaline.telemetry import configure_tracing


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level, service="orchestrator")
    require_schema(settings, "orchestrator")
    configure_tracing("orchestrator")
    run(build_app(settings), settings)


if __name__ == "__main__":
    main()
