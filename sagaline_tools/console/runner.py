"""The console's background work: run replay jobs started from the console (one at a time,
in order), keep the parked index fed and reconciled."""

from __future__ import annotations

import logging
import os
import socket

from sqlalchemy import or_, select

from sagaline.background import BackgroundLoop
from sagaline.messaging.parking import ParkingQueues
from sagaline_tools.console.jobs import RUNNING, STALE_AFTER, JobError, ReplayJobs
from sagaline_tools.console.replay import ReplayRunner
from sagaline_tools.console.tables import replay_jobs

log = logging.getLogger("sagaline.console.jobs")


class JobLoop(BackgroundLoop):
    """Picks up running console jobs nobody runs (new, resumed, or left by a dead console)."""

    name = "replay-jobs"

    def __init__(self, jobs: ReplayJobs, parking: ParkingQueues, interval: float = 1.0) -> None:
        super().__init__(interval)
        self.jobs = jobs
        self.parking = parking
        self.runner_name = f"console:{socket.gethostname()[:40]}:{os.getpid()}"

    async def run_once(self) -> bool:
        stale = self.jobs.clock() - STALE_AFTER
        async with self.jobs.engine.connect() as conn:
            job_id = await conn.scalar(
                select(replay_jobs.c.id)
                .where(
                    replay_jobs.c.status == RUNNING,
                    replay_jobs.c.runner.like("console%"),
                    or_(replay_jobs.c.heartbeat_at.is_(None), replay_jobs.c.heartbeat_at < stale),
                )
                .order_by(replay_jobs.c.id)
                .limit(1)
            )
        if job_id is None:
            return False
        runner = ReplayRunner(self.jobs, self.parking, runner=self.runner_name)
        try:
            job = await runner.run(int(job_id))
        except JobError as exc:
            log.warning("replay job not run", extra={"job": job_id, "error": str(exc)})
            return False
        log.info("replay job ended", extra={"job": job.id, "status": job.status})
        return True
