"""Moving running sagas to another version of their workflow: the request and the checks (pure).

A saga is always at rest between messages, so moving it is a change of data: its state name
(mapped), its definition version, one history entry. What makes a move safe is whether the saga
keeps its meaning under the target version, and `judge` says so for one saga, or why not:

- its state has a counterpart in the target (the same name, the target's `continues` mapping
  for the version before it, or the operator's `--map old=new`), and that is neither a final
  state nor compensating unless the saga is compensating;
- every command it awaits is one whose replies the target state acts on (a transition, not an
  ignore), so the reply on its way still moves it;
- every timer it has set is one the target state acts on;
- something can still move it on (a reply it awaits, a timer it has, or an event from outside);
- its compensation stack holds only compensations the target registers, confirmed by the same
  replies, and its compensation target is one of the target's;
- its data validates against the target's data model.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from contracts.base import ReplyEvent
from contracts.replies import REPLIES
from orchestrator.engine.machine import Machine, Transition
from orchestrator.engine.model import TIMER_PREFIX, RuntimeState
from orchestrator.engine.registry import Workflows
from orchestrator.engine.versioning import definition_hash
from sagaline.messaging.errors import ReportableError

Outcome = Literal["migrate", "blocked"]
OUTCOMES: tuple[Outcome, ...] = ("migrate", "blocked")
_REPLIES_OF = {
    command.message_type: tuple(r.message_type for r in rs) for command, rs in REPLIES.items()
}
_WHERE = re.compile(r"^(state|version|key)=(.+)$")


class InvalidMigration(ReportableError):
    """A migration request that names an unknown workflow, version or state, or is malformed."""


@dataclass(frozen=True)
class SagaFilter:
    """`--where` conditions: each field matches any of its values; fields must all match."""

    states: tuple[str, ...] = ()
    versions: tuple[int, ...] = ()
    keys: tuple[str, ...] = ()
    """Business keys; one ending in `*` matches every key that starts with the rest."""


@dataclass(frozen=True)
class MigrationRequest:
    workflow: str
    target: Machine[Any, Any]
    mapping: Mapping[str, str]
    """The operator's `--map old=new`: a saga in `old` (of any version) continues in `new`."""
    declared: Mapping[int, Mapping[str, str]]
    """Each loaded version's own `continues` mapping (from the version before it)."""
    where: SagaFilter = SagaFilter()

    @property
    def to_version(self) -> int:
        return int(self.target.version)

    def continues_in(self, from_version: int, state: str) -> str:
        """Where a saga of `from_version` in `state` continues under the target version."""
        if state in self.mapping:
            return self.mapping[state]
        for version in range(from_version + 1, self.to_version + 1):
            state = self.declared.get(version, {}).get(state, state)
        return state


@dataclass(frozen=True)
class SagaFacts:
    """What the checks read of one saga: its row, its timers and what it awaits."""

    saga_id: uuid.UUID
    state: str
    definition_version: int
    data: Mapping[str, Any]
    runtime: RuntimeState
    timers: tuple[str, ...] = ()
    awaited: tuple[str | None, ...] = ()
    """Command type of each outstanding command (None: its outbox row is gone)."""


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    to_state: str
    reasons: tuple[str, ...] = ()


@dataclass
class Report:
    """Counts per version and outcome, the moves, and why sagas are blocked."""

    workflow: str
    to_version: int
    to_hash: str
    by_version: dict[int, Counter[str]] = field(default_factory=dict)
    moves: Counter[tuple[int, str, str]] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    already: int = 0
    """Running sagas that already run under the target version (not touched)."""
    migrated: int = 0
    changed_meanwhile: int = 0
    """Sagas that finished or were migrated between the survey and their own transaction."""

    def count(self, facts: SagaFacts, verdict: Verdict) -> None:
        counts = self.by_version.setdefault(facts.definition_version, Counter())
        counts["sagas"] += 1
        counts[verdict.outcome] += 1
        if verdict.outcome == "migrate":
            self.moves[(facts.definition_version, facts.state, verdict.to_state)] += 1
        for reason in verdict.reasons:
            self.reasons[reason] += 1
            shown = self.examples.setdefault(reason, [])
            if len(shown) < 3:
                shown.append(str(facts.saga_id))

    @property
    def blocked(self) -> int:
        return sum(c["blocked"] for c in self.by_version.values())

    @property
    def migratable(self) -> int:
        return sum(c["migrate"] for c in self.by_version.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "to_version": self.to_version,
            "to_hash": self.to_hash,
            "by_version": {
                str(version): {"sagas": c["sagas"], **{o: c[o] for o in OUTCOMES}}
                for version, c in sorted(self.by_version.items())
            },
            "moves": [
                {"from_version": v, "from_state": s, "to_state": t, "sagas": n}
                for (v, s, t), n in sorted(self.moves.items())
            ],
            "blocked": [
                {"reason": reason, "sagas": n, "examples": self.examples[reason]}
                for reason, n in self.reasons.most_common()
            ],
            "already_at_target": self.already,
            "migrated": self.migrated,
            "changed_meanwhile": self.changed_meanwhile,
        }


def plan_request(
    workflows: Workflows,
    workflow: str,
    to_version: int,
    maps: Sequence[str] = (),
    where: Sequence[str] = (),
) -> MigrationRequest:
    """Validate the operator's request against the loaded versions; InvalidMigration if not."""
    loaded = workflows.versions.get(workflow)
    if loaded is None:
        raise InvalidMigration(f"unknown workflow {workflow!r} (known: {', '.join(workflows)})")
    target = loaded.get(to_version)
    if target is None:
        versions = ", ".join(f"v{v}" for v in loaded)
        raise InvalidMigration(f"{workflow} has no version {to_version} loaded ({versions})")
    states = {s.value for machine in loaded.values() for s in machine.states}
    mapping = _parse_maps(maps, states, target)
    return MigrationRequest(
        workflow=workflow,
        target=target,
        mapping=mapping,
        declared={v: dict(m.from_previous) for v, m in loaded.items()},
        where=_parse_where(where, states),
    )


def _parse_maps(maps: Iterable[str], states: set[str], target: Machine[Any, Any]) -> dict[str, str]:
    mapping: dict[str, str] = {}
    targets = {s.value for s in target.states}
    for item in maps:
        old, sep, new = (part.strip() for part in item.partition("="))
        if not sep or not old or not new:
            raise InvalidMigration(f"--map {item!r}: expected OLD=NEW (state names)")
        if old not in states:
            raise InvalidMigration(f"--map {item!r}: {old!r} is no state of any loaded version")
        if new not in targets:
            raise InvalidMigration(
                f"--map {item!r}: {new!r} is no state of v{target.version} "
                f"(its states: {', '.join(sorted(targets))})"
            )
        if mapping.get(old, new) != new:
            raise InvalidMigration(f"--map: {old!r} is mapped twice")
        mapping[old] = new
    return mapping


def _parse_where(conditions: Iterable[str], states: set[str]) -> SagaFilter:
    found: dict[str, list[str]] = {"state": [], "version": [], "key": []}
    for condition in conditions:
        match = _WHERE.match(condition.strip())
        if match is None:
            raise InvalidMigration(
                f"--where {condition!r}: expected state=NAME, version=N or key=KEY (KEY* for a "
                "prefix)"
            )
        found[match.group(1)].append(match.group(2).strip())
    for state in found["state"]:
        if state not in states:
            raise InvalidMigration(f"--where state={state}: no state of any loaded version")
    versions = []
    for version in found["version"]:
        if not version.isdigit() or int(version) < 1:
            raise InvalidMigration(f"--where version={version}: versions are whole numbers from 1")
        versions.append(int(version))
    return SagaFilter(tuple(found["state"]), tuple(versions), tuple(found["key"]))


def new_report(request: MigrationRequest) -> Report:
    return Report(request.workflow, request.to_version, definition_hash(request.target))


def judge(request: MigrationRequest, saga: SagaFacts) -> Verdict:
    """Whether the saga keeps its meaning under the target version, or every reason why not."""
    target = request.target
    to_state = request.continues_in(saga.definition_version, saga.state)
    v = f"v{target.version}"
    if to_state not in {s.value for s in target.states}:
        return Verdict(
            "blocked",
            to_state,
            (f"state {saga.state} of v{saga.definition_version} has no counterpart in {v} "
             f"(say where it continues: --map {saga.state}=STATE)",),
        )  # fmt: skip
    compensating = saga.runtime.compensation_target is not None
    reasons = [
        *_state_reasons(target, saga, to_state, compensating),
        *_data_reasons(target, saga.data),
        *_compensation_reasons(target, saga.runtime),
    ]
    if compensating:
        reasons += _confirmation_reasons(target, saga)
    elif to_state not in target.final and to_state != target.compensating:
        reasons += _waiting_reasons(target, saga, to_state)
    return Verdict("blocked" if reasons else "migrate", to_state, tuple(reasons))


def _state_reasons(
    target: Machine[Any, Any], saga: SagaFacts, to_state: str, compensating: bool
) -> list[str]:
    v = f"v{target.version}"
    if to_state in target.final:
        return [f"{saga.state} would continue in {to_state}, a final state of {v}"]
    if compensating and to_state != target.compensating:
        return [f"compensating, but {saga.state} would continue in {to_state}, which is not {v}'s "
                f"compensating state {target.compensating}"]  # fmt: skip
    if not compensating and to_state == target.compensating:
        return [f"{saga.state} would continue in {v}'s compensating state without compensating"]
    return []


def _data_reasons(target: Machine[Any, Any], data: Mapping[str, Any]) -> list[str]:
    try:
        target.data_model.model_validate(dict(data))
    except ValidationError as exc:
        # Field names and error kinds only: the values may be personal data.
        problems = [
            f"{'.'.join(str(p) for p in err['loc']) or 'data'}: {err['type']}"
            for err in exc.errors(include_input=False, include_url=False)[:3]
        ]
        return [f"its data does not fit v{target.version}'s model ({'; '.join(problems)})"]
    return []


def _compensation_reasons(target: Machine[Any, Any], runtime: RuntimeState) -> list[str]:
    v = f"v{target.version}"
    reasons = []
    for entry in runtime.compensations:
        if target.compensations.get(entry.command_type) != entry.confirmed_by:
            reasons.append(
                f"its compensation {entry.command_type} (confirmed by {entry.confirmed_by}) is "
                f"not registered in {v}"
            )
    wanted = runtime.compensation_target
    if wanted is not None and wanted not in {s.value for s in target.compensation_targets}:
        reasons.append(f"it compensates towards {wanted}, not a compensation target of {v}")
    return reasons


def _confirmation_reasons(target: Machine[Any, Any], saga: SagaFacts) -> list[str]:
    """A compensating saga awaits the confirmation of the top of its stack: the engine reads
    the reply type from the stack, but the target must still consume that event."""
    top = saga.runtime.compensations[-1] if saga.runtime.compensations else None
    if top is None or not saga.runtime.outstanding or top.confirmed_by in target.event_classes:
        return []
    return [f"it awaits {top.confirmed_by}, which v{target.version} does not consume"]


def _waiting_reasons(target: Machine[Any, Any], saga: SagaFacts, to_state: str) -> list[str]:
    v = f"v{target.version}"
    reasons = []
    moves = False
    for command in saga.awaited:
        if command is None:
            reasons.append("it awaits a command whose outbox row is gone: its replies are unknown")
            continue
        replies = _REPLIES_OF.get(command, ())
        deaf = [r for r in replies if not isinstance(target.handling(to_state, r), Transition)]
        if deaf or not replies:
            reasons.append(
                f"it awaits {command}, but {to_state} in {v} does not act on "
                f"{', '.join(deaf) or 'its replies'}"
            )
        moves = moves or bool(replies)
    for name in saga.timers:
        if not isinstance(target.handling(to_state, TIMER_PREFIX + name), Transition):
            reasons.append(
                f"its timer {name} would change nothing in {to_state} under {v} (cancel it "
                "first: sagaline timers cancel)"
            )
        moves = True
    if not moves and not _moved_from_outside(target, to_state):
        reasons.append(
            f"nothing would move it on in {to_state} under {v}: it awaits no reply and has no "
            "timer that state acts on"
        )
    return reasons


def _moved_from_outside(target: Machine[Any, Any], state: str) -> bool:
    """Whether an event other than a reply or a timer takes `state` on to a next step (one that
    only cancels or fails it does not count: the saga would wait for it for ever)."""
    onward = {s.value for s in target.active_states} - {state}
    for (source, trigger), transition in target.transitions.items():
        if source != state or trigger.startswith(TIMER_PREFIX):
            continue
        is_reply = transition.message_class is not None and issubclass(
            transition.message_class, ReplyEvent
        )
        if not is_reply and transition.targets & onward:
            return True
    return False
