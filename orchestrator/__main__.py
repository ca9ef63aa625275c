"""`python -m orchestrator`: the orchestrator process (container entry point)."""

from __future__ import annotations

from orchestrator.app import build_app
from sagaline.logs import configure_logging
from sagaline.service import run
from sagaline.settings import Settings


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level, service="orchestrator")
    run(build_app(settings), settings)


if __name__ == "__main__":
    main()
