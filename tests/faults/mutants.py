"""Break one reliability mechanism at a time and check that its fault scenario fails.

    .venv/bin/python -m tests.faults.mutants            # every mutant (about 10 minutes)
    .venv/bin/python -m tests.faults.mutants timer-cancel saga-compare-and-set

Each mutant is a one-line edit of the committed tree (HEAD, in a temporary git worktree, so the
working copy is never touched) that disables a mechanism the fault suite claims to prove. The
scenario that guards it runs against the mutated code (PYTHONPATH puts the worktree ahead of the
editable install, for the test and the processes it starts). A mutant is *caught* when the
scenario fails; a surviving mutant means a test that cannot fail for that mechanism. Exits 1 if
any mutant survives or no longer applies (its line changed: update the mutant).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FAULTS = "tests/faults"


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    old: str
    new: str
    test: str
    """The scenario (pytest node id under tests/faults) that must fail, or a test path from
    the repository root (`tests/...`) for mechanisms guarded outside the fault suite."""


MUTANTS = (
    Mutant(
        "orchestrator-inbox-dedupe",
        "orchestrator/store/sql.py",
        "fresh.append(incoming.message_id in fresh_ids)",
        "fresh.append(True)",
        "test_duplicates.py",
    ),
    Mutant(
        "saga-compare-and-set",
        "orchestrator/store/sql.py",
        'WHERE id = $1 AND version = $2\n"""\n\n_HOLD',
        'WHERE id = $1\n"""\n\n_HOLD',
        "test_replicas.py",
    ),
    Mutant(
        "write-checks-what-the-read-saw",
        "orchestrator/store/sql.py",
        "        IF changed <> {expected} THEN",
        "        IF false THEN",
        "tests/integration/test_store.py::test_one_message_delivered_twice_at_once_is_applied_once",
    ),
    Mutant(
        "worker-inbox-dedupe",
        "consumers/inbox.py",
        "    earlier = set(ids) - {row[0] for row in inserted}",
        "    earlier = set(ids) - set(ids)",
        "test_crash_points.py::test_payments_worker_crash_points",
    ),
    Mutant(
        "outbox-marked-sent",
        "orchestrator/relay.py",
        "self.marks.add([message.message_id for message in confirmed], self.clock())",
        "None",
        "tests/integration/test_relay.py::"
        "test_dispatch_publishes_its_leased_rows_which_the_loop_leaves_alone_until_a_sweep",
    ),
    Mutant(
        "sweep-skips-rows-awaiting-their-mark",
        "orchestrator/relay.py",
        "                mine = self._in_flight | self.marks.pending()",
        "                mine = self._in_flight",
        "tests/integration/test_relay.py::"
        "test_dispatch_publishes_its_leased_rows_which_the_loop_leaves_alone_until_a_sweep",
    ),
    Mutant(
        "rows-being-marked-stay-out-of-sweeps",
        "orchestrator/dispatch_marks.py",
        "        self._writing.update(message_id for message_id, _ in marks)",
        "        pass",
        "tests/unit/test_dispatch_marks.py::"
        "test_a_write_takes_every_pending_mark_with_its_confirm_time_and_no_flush_runs",
    ),
    Mutant(
        "write-marks-dispatched-rows",
        "orchestrator/store/sql.py",
        'WHERE message_id = $1\n"""',
        'WHERE message_id = $1 AND false\n"""',
        "tests/integration/test_store.py::"
        "test_the_next_write_marks_the_rows_earlier_dispatches_confirmed",
    ),
    Mutant(
        "guessed-refusal-reads-again",
        "orchestrator/store/saga_store.py",
        "        if known is not None and any("
        "isinstance(step, ReportableError) for step in plan.steps):",
        "        if False:",
        "tests/integration/test_snapshot_guess.py::"
        "test_a_refusal_in_a_guessed_batch_is_checked_against_a_read",
    ),
    Mutant(
        "missed-guess-reads-again",
        "orchestrator/store/saga_store.py",
        "            except GuessMissed:\n                guessing = False",
        "            except GuessMissed:\n                pass",
        "tests/integration/test_snapshot_guess.py::"
        "test_a_start_delivered_again_is_a_duplicate_wherever_it_lands",
    ),
    Mutant(
        "failed-write-gives-its-marks-back",
        "orchestrator/store/saga_store.py",
        "                pending.give_back(marks)",
        "                pass",
        "tests/integration/test_store.py::"
        "test_marks_taken_by_a_write_that_did_not_commit_are_written_by_its_retry",
    ),
    Mutant(
        "relay-loop-honours-dispatch-leases",
        "orchestrator/relay.py",
        "    AND ($3 OR dispatch_until IS NULL OR dispatch_until < now())",
        "    AND true",
        "tests/integration/test_relay.py::"
        "test_dispatch_publishes_its_leased_rows_which_the_loop_leaves_alone_until_a_sweep",
    ),
    Mutant(
        "duplicate-sweeps-leased-rows",
        "orchestrator/relay.py",
        "        self._sweeping = True\n        self.wake()",
        "        self._sweeping = False\n        self.wake()",
        "tests/e2e/test_lost_dispatch.py::"
        "test_a_step_committed_without_dispatch_sends_its_commands_when_redelivered",
    ),
    Mutant(
        "relay-start-sweeps",
        "orchestrator/relay.py",
        "        # failover). Sweep them now rather than after their lease and a poll.\n"
        "        self._sweeping = True",
        "        # failover). Sweep them now rather than after their lease and a poll.\n"
        "        self._sweeping = False",
        "tests/integration/test_relay.py::"
        "test_a_relay_starting_sweeps_rows_its_previous_run_leased_and_never_published",
    ),
    Mutant(
        "unreleased-lease-wakes-the-relay",
        "orchestrator/relay.py",
        "call_later(self.dispatch_lease_seconds + 0.5, self.wake)",
        "call_later(3600, self.wake)",
        "tests/integration/test_relay.py::"
        "test_rows_a_dispatch_could_not_release_go_out_once_their_lease_ran_out",
    ),
    Mutant(
        "one-by-one-duplicate-sweeps",
        "orchestrator/intake.py",
        "        if result.duplicate and self.sweep is not None:",
        "        if False:",
        "tests/integration/test_store.py::"
        "test_a_step_that_leaves_its_rows_to_its_caller_leases_them_and_a_late_duplicate_sweeps",
    ),
    Mutant(
        "startup-waits-for-a-queues-home-node",
        "sagaline/messaging/declare.py",
        '    return isinstance(exc, ChannelNotFoundEntity) and "home node" in str(exc)',
        "    return False",
        "tests/faults/test_cluster.py::"
        "test_a_process_starting_while_its_queues_home_node_is_down_waits_for_it",
    ),
    Mutant(
        "dispatch-releases-what-it-did-not-send",
        "orchestrator/relay.py",
        "        if unsent:\n            await self._release(unsent)",
        "        if unsent:\n            pass",
        "tests/integration/test_relay.py::"
        "test_a_command_no_queue_takes_stays_in_the_outbox_for_the_loop_and_the_rest_go_out",
    ),
    Mutant(
        "stale-reply-fence",
        "orchestrator/engine/decide.py",
        "if incoming.is_reply and incoming.causation_id not in snapshot.runtime.outstanding:",
        "if False:",
        "test_reply_order.py::test_a_reply_from_an_earlier_attempt_is_fenced_as_stale",
    ),
    Mutant(
        "timers-in-due-order",
        "orchestrator/store/sql.py",
        "ORDER BY due_at, saga_id LIMIT $2 FOR UPDATE SKIP LOCKED",
        "ORDER BY saga_id LIMIT $2 FOR UPDATE SKIP LOCKED",
        "test_timers.py",
    ),
    Mutant(
        "timer-cancel",
        "orchestrator/store/sql.py",
        'DELETE FROM saga.timers WHERE saga_id = $1 AND name = $2\n"""\n\n# The timer loop',
        'DELETE FROM saga.timers WHERE false\n"""\n\n# The timer loop',
        "test_timers.py",
    ),
    Mutant(
        "database-outage-hold",
        "sagaline/db.py",
        "    seen: set[int] = set()\n    current: BaseException | None = exc\n",
        "    return False\n    seen: set[int] = set()\n    current: BaseException | None = exc\n",
        "test_database_outage.py",
    ),
    Mutant(
        "failover-holds-deliveries",
        "sagaline/db.py",
        "    seen: set[int] = set()\n    current: BaseException | None = exc\n",
        "    return False\n    seen: set[int] = set()\n    current: BaseException | None = exc\n",
        "test_pg_failover.py",
    ),
    Mutant(
        "size-limit-before-parsing",
        "sagaline/messaging/parsing.py",
        "if len(body) > max_body_bytes:",
        "if False:",
        "test_poison.py::test_poison_is_parked_once_with_its_reason_and_logs_never_show_payloads",
    ),
    Mutant(
        "relay-holds-missing-exchange",
        "orchestrator/relay.py",
        "        if not name:\n            return True",
        "        if True:\n            return True",
        "test_poison.py::test_an_outbox_row_for_a_missing_exchange_does_not_block_the_relay",
    ),
    Mutant(
        "replay-republishes",
        "sagaline/messaging/parking.py",
        "                await channel.default_exchange.publish(",
        "                await (lambda *a, **k: __import__('asyncio').sleep(0))(",
        "test_replay.py",
    ),
    Mutant(
        "broker-reconnect",
        "sagaline/messaging/nodes.py",
        "connection = await aio_pika.connect_robust(amqp_url, **kwargs)",
        "connection = await aio_pika.connect(amqp_url, **kwargs)",
        "test_broker_outage.py",
    ),
    Mutant(
        "amqp-next-node",
        "sagaline/messaging/nodes.py",
        "        if not self._close_called:\n            self._ring.advance()",
        "        if False:\n            self._ring.advance()",
        "tests/integration/test_amqp_nodes.py",
    ),
    Mutant(
        "cluster-broker-fails-over",
        "sagaline/messaging/nodes.py",
        '        broker._connection_kwargs["connection_class"] = connection_class(urls)',
        "        pass",
        "test_cluster.py::test_the_node_leading_the_queues_killed_under_load_and_restarted",
    ),
    Mutant(
        "declarations-not-repeated-on-reconnect",
        "sagaline/messaging/declare.py",
        "    finally:\n        await channel.close()",
        "    finally:\n        pass",
        "test_cluster.py::test_the_node_leading_the_queues_killed_under_load_and_restarted",
    ),
    Mutant(
        "relay-poll-publishes-abandoned-rows",
        "orchestrator/app.py",
        "            poll_seconds=self.settings.relay_poll_seconds,",
        "            poll_seconds=3600.0,",
        # The host cut-off no longer guards it: the cut-off replica's redelivered messages are
        # duplicates to the others, which sweep its rows (intake.py) before any poll.
        "tests/e2e/test_lost_dispatch.py::"
        "test_a_row_abandoned_by_a_dead_replica_is_published_by_the_relay_poll",
    ),
    Mutant(
        "amqp-tls-verification",
        "sagaline/tls.py",
        "    context.minimum_version = _MIN_TLS\n    _client_certificate(\n"
        "        context,\n        settings.amqp_cert_file,",
        "    context.minimum_version = _MIN_TLS\n    context.check_hostname = False\n"
        "    context.verify_mode = ssl.CERT_NONE\n    _client_certificate(\n"
        "        context,\n        settings.amqp_cert_file,",
        "test_security.py::test_tls_to_the_broker_verifies_the_server_and_presents_the_client_certificate",
    ),
    Mutant(
        "least-privilege-worker-read",
        "deploy/rabbitmq/make_definitions.py",
        '            "read": rf"^{ns}\\.(?:{exchanges}|{me})$",',
        '            "read": ".*",',
        "test_security.py::test_least_privilege_roles_run_orders_and_are_refused_the_rest",
    ),
    Mutant(
        "intake-publishes-its-commands",
        "orchestrator/intake.py",
        "            await self.dispatch(outgoing)",
        "            pass",
        "tests/e2e/test_order_e2e.py",
    ),
    Mutant(
        "relay-woken-at-commit",
        "orchestrator/store/sql.py",
        "    wake = notify_relay and bool(plan.outbox)",
        "    wake = False",
        "tests/integration/test_store.py::"
        "test_a_commit_with_outbox_rows_wakes_the_relay_unless_the_caller_publishes_them",
    ),
    Mutant(
        "worker-batch-one-command-per-order",
        "consumers/runtime.py",
        " or key in self._run_keys",
        "",
        "tests/integration/test_worker_batches.py",
    ),
    Mutant(
        "worker-batch-stock-in-order",
        "consumers/inventory/handlers.py",
        "on_hand[sku] -= quantity",
        "on_hand[sku] -= 0",
        "tests/integration/test_worker_batches.py",
    ),
    Mutant(
        "sender-check",
        "sagaline/messaging/senders.py",
        "        if not self.allowed:\n",
        "        if True:\n",
        "test_security.py::test_least_privilege_roles_run_orders_and_are_refused_the_rest",
    ),
    Mutant(
        "own-copies-signed",
        "sagaline/messaging/delivery.py",
        "republished(delivery, headers, self.senders.own_user)",
        "republished(delivery, headers, None)",
        "tests/integration/test_senders.py",
    ),
)


def run(mutant: Mutant, tree: Path) -> tuple[str, float]:
    """'caught', 'SURVIVED' or 'stale' (the line to mutate is no longer there)."""
    path = tree / mutant.path
    original = path.read_text()
    if original.count(mutant.old) != 1:
        return "stale", 0.0
    path.write_text(original.replace(mutant.old, mutant.new))
    started = time.monotonic()
    env = dict(os.environ, PYTHONPATH=str(tree))
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"]
    try:
        result = subprocess.run(
            [*command, *_target(mutant.test)],
            cwd=tree,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        caught = result.returncode not in (0, 5)
    except subprocess.TimeoutExpired:
        caught = True  # the scenario's own deadlines are shorter: a hang is a failure too
    finally:
        path.write_text(original)
    return ("caught" if caught else "SURVIVED"), time.monotonic() - started


def _target(test: str) -> list[str]:
    """A fault scenario (relative to tests/faults), or any test given from the repository root."""
    if test.startswith("tests/"):
        return [test]
    return ["-m", "faults", f"{FAULTS}/{test}"]


def main(names: list[str]) -> int:
    unknown = set(names) - {m.name for m in MUTANTS}
    if unknown:
        print(f"unknown mutant(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    chosen = [m for m in MUTANTS if not names or m.name in names]
    with tempfile.TemporaryDirectory(prefix="sagaline-mutants-") as scratch:
        tree = Path(scratch) / "tree"
        git = ["git", "-C", str(ROOT)]
        subprocess.run([*git, "worktree", "add", "-q", "--detach", str(tree)], check=True)
        try:
            outcomes = []
            for mutant in chosen:
                outcome, seconds = run(mutant, tree)
                outcomes.append(outcome)
                print(f"{mutant.name:32} {outcome:8} {seconds:5.0f} s  {mutant.test}", flush=True)
        finally:
            subprocess.run([*git, "worktree", "remove", "--force", str(tree)], check=False)
    return 0 if all(o == "caught" for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
