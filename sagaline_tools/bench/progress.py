"""How sections report progress: a phase with an optional total, then counts towards it."""

from __future__ import annotations

from typing import Protocol


class Step(Protocol):
    def phase(self, text: str, total: int | None = None) -> None:
        """Start a phase of the section (e.g. "seeding", "measuring") of `total` units."""

    def update(self, completed: int) -> None:
        """Units of the current phase done so far."""


class Silent:
    def phase(self, text: str, total: int | None = None) -> None:
        pass

    def update(self, completed: int) -> None:
        pass
