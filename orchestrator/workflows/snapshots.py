"""The checked-in snapshots of workflow versions: `versions/<workflow>/v<N>.json`.

Reading, checking and writing them; what is checked is orchestrator.engine.versioning's. Written
by `sagaline workflows snapshot`, checked by its `--check` and by the unit tests, like
migrations: a snapshot, once written, describes its version for good.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from orchestrator.engine import versioning
from orchestrator.engine.machine import Machine
from orchestrator.engine.versioning import Snapshot
from sagaline.messaging.errors import ReportableError

_FILE = re.compile(r"^v([1-9][0-9]*)\.json$")

Snapshots = dict[tuple[str, int], Snapshot]


class SnapshotError(ReportableError):
    """Snapshots that cannot be read, or a write that would break them; one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def path_of(directory: Path, workflow: str, version: int) -> Path:
    return directory / workflow / f"v{version}.json"


def read(directory: Path) -> Snapshots:
    found: Snapshots = {}
    problems = []
    for file in sorted(directory.glob("*/*.json")) if directory.is_dir() else []:
        match = _FILE.match(file.name)
        where = f"{file.parent.name}/{file.name}"
        if match is None:
            problems.append(f"{where}: snapshot files are named v<N>.json")
            continue
        try:
            document = json.loads(file.read_text())
        except (OSError, ValueError) as exc:
            problems.append(f"{where}: not readable JSON ({type(exc).__name__})")
            continue
        key = (file.parent.name, int(match.group(1)))
        if (document.get("workflow"), document.get("version")) != key:
            problems.append(f"{where}: says {document.get('workflow')} v{document.get('version')}")
            continue
        found[key] = document
    if problems:
        raise SnapshotError(problems)
    return found


def check(machines: Iterable[Machine[Any, Any]], directory: Path) -> list[str]:
    """Every problem of the loaded machines against the snapshots in `directory`."""
    loaded = list(machines)
    stored = read(directory)
    return [
        *versioning.check_machines(loaded, stored),
        *versioning.newest_loaded(loaded, stored),
        *versioning.check_history(stored),
    ]


def write(machines: Iterable[Machine[Any, Any]], directory: Path) -> list[Path]:
    """Write the snapshot of every loaded version that has none (or an out-of-date one).

    Nothing is written when a loaded version changed since its snapshot, or when the result
    would strand states: SnapshotError lists why. Returns the files written."""
    loaded = list(machines)
    stored = read(directory)
    changed = [
        problem
        for problem in versioning.check_machines(loaded, stored)
        if "changed since its snapshot" in problem
    ]
    documents = {(m.name, m.version): versioning.snapshot(m) for m in loaded}
    problems = changed + versioning.check_history({**stored, **documents})
    if problems:
        raise SnapshotError(problems)
    written = []
    for (workflow, version), document in sorted(documents.items()):
        path = path_of(directory, workflow, version)
        text = versioning.render(document)
        if path.exists() and path.read_text() == text:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written
