"""The bench reads a helper's report line whole, however long, whatever mode the pipe is in."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sagaline_tools.bench.procs import Child

pytestmark = pytest.mark.timeout(30)

WRITER = """
import json, sys, time
doc = json.dumps({"samples": list(range(40_000))})
sys.stdout.write(doc[: len(doc) // 2]); sys.stdout.flush()
time.sleep(0.3)  # the reader finds half a line in the pipe
sys.stdout.write(doc[len(doc) // 2 :] + "\\n"); sys.stdout.flush()
"""


async def test_a_long_report_is_read_whole_from_a_non_blocking_pipe(tmp_path: Path) -> None:
    child = Child("writer", ["-c", WRITER], tmp_path / "writer.log", dict(os.environ))
    child.start(capture_stdout=True)
    try:
        assert child.popen is not None and child.popen.stdout is not None
        os.set_blocking(child.popen.stdout.fileno(), False)
        report = await child.read_json_line(within=20)
        assert report["samples"] == list(range(40_000))
    finally:
        await child.stop(grace=5)
