"""The figures of a run, their goals, the table and the JSON document (pure: no I/O)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from rich.table import Table

from sagaline_tools.bench.config import HOPS_PER_ORDER
from sagaline_tools.bench.machine import summary_line
from sagaline_tools.bench.stage_report import stage_text
from sagaline_tools.bench.stats import ratio

SCHEMA = "sagaline-bench/1"

# The goals of issue "Performance", and the sizes they are stated for.
GOAL_ORCHESTRATOR_RATIO = 0.5
"""Of the minimal step's rate (issue "Performance: within 2x of a minimal hand-written step")."""
GOAL_E2E_SAGAS_PER_S = 250.0
GOAL_P99_RATIO = 3.0
"""The orchestrator's p99 at half load as a multiple of the bare relay's p99 at that rate."""
GOAL_GROWTH_RATIO = 0.9
"""End to end at GOAL_GROWTH_ORDERS orders against the first (smallest) size's rate."""
GOAL_GROWTH_ORDERS = 30_000
GOAL_SCALE_RATIO = 0.9
GOAL_TIMER_SECONDS = 60.0
GOAL_TIMERS = 100_000
GOAL_FINISHED = 1_000_000
GOAL_LIVE = 100_000

PASS, FAIL, NO_GOAL, NOT_RUN, ERROR = "pass", "fail", "n/a", "not run", "error"


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    value: float | None
    unit: str
    ratio: float | None = None
    ratio_to: str | None = None
    """What the ratio divides by ("baseline", "empty tables")."""
    goal: str | None = None
    status: str = NO_GOAL
    at_goal_size: bool = True
    """False when the run was smaller than the size the goal is stated for."""
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


Results = Mapping[str, Mapping[str, Any]]


def _status(ok: bool) -> str:
    return PASS if ok else FAIL


def _missing(
    key: str, label: str, unit: str, goal: str | None, section: str, errors: Mapping[str, str]
) -> Figure:
    if section in errors:
        return Figure(key, label, None, unit, goal=goal, status=ERROR, note=errors[section])
    return Figure(key, label, None, unit, goal=goal, status=NOT_RUN)


_SHORT = {"orchestrator": "orch", "postgresql": "pg", "rabbitmq": "mq", "machine": "all"}


def _join(*parts: str) -> str:
    """Note parts joined with "; ", empty ones left out."""
    return "; ".join(part for part in parts if part)


def _cores(result: Mapping[str, Any]) -> str:
    """Cores each process used on average, e.g. "cores: orch 0.95 pg 0.40 mq 0.35 all 1.98"."""
    cores = result.get("cpu_cores") or {}
    parts = [f"{_SHORT.get(name, name)} {value:.2f}" for name, value in cores.items()]
    return "cores: " + " ".join(parts) if parts else ""


def _baseline(base: Mapping[str, Any]) -> Figure:
    return Figure(
        "baseline_msgs_per_s",
        "Bare relay baseline (aio-pika, batched)",
        base.get("msgs_per_s"),
        "msgs/s",
        goal="reference",
        note=_join(
            f"{base['messages']:,} msgs of {base['body_bytes']} B, quorum, persistent, "
            f"confirms; batch {base['batch']} / {base['max_wait_ms']:g} ms",
            _cores(base),
        ),
    )


def _two_hop(base: Mapping[str, Any]) -> Figure:
    rate = base.get("two_hop_msgs_per_s")
    cores = _cores({"cpu_cores": base.get("two_hop_cpu_cores")})
    return Figure(
        "two_hop_msgs_per_s",
        "Two relays at once, A -> B -> C",
        rate,
        "msgs/s",
        ratio(rate, base.get("msgs_per_s")),
        "baseline",
        goal="reference",
        note=_join("the orchestrator section's shape (its hop + the stub's hop)", cores),
    )


def _per_transition(result: Mapping[str, Any], process: str) -> str:
    """CPU time per transition of the stepping process and of PostgreSQL, and WAL volume, e.g.
    "per transition: orch 0.48 ms, pg 0.11 ms CPU, WAL 3.6 kB"."""
    cores = result.get("cpu_cores") or {}
    transitions = result.get("transitions") or 0
    seconds = result.get("seconds") or 0.0
    if not transitions or not seconds:
        return ""
    parts = [
        f"{_SHORT.get(name, name)} {cores[name] * seconds / transitions * 1000:.2f} ms"
        for name in (process, "postgresql")
        if name in cores
    ]
    text = "per transition: " + ", ".join(parts) + " CPU" if parts else ""
    wal = result.get("wal_per_transition") or {}
    if wal:
        text = _join(text, f"WAL {wal['wal_bytes'] / 1024:.1f} kB, {wal['wal_fpi']:.2f} FPI")
    return text


def _minimal(minimal: Mapping[str, Any], base_rate: float | None) -> Figure:
    rate = minimal.get("transitions_per_s")
    return Figure(
        "minimal_transitions_per_s",
        "Minimal step (raw asyncpg + aio-pika, stub workers)",
        rate,
        "transitions/s",
        ratio(rate, base_rate),
        "baseline",
        goal="reference",
        note=_join(
            f"{minimal['orders']:,} orders; inbox, read, compare-and-set, outbox, publish "
            "with confirms, mark",
            _cores(minimal),
            _per_transition(minimal, "minimal"),
        ),
    )


def _orchestrator(
    orch: Mapping[str, Any],
    minimal_rate: float | None,
    base_rate: float | None,
    two_hop_rate: float | None,
) -> Figure:
    rate = orch.get("transitions_per_s")
    r = ratio(rate, minimal_rate)
    against = [
        f"{value:.2f}x {name}"
        for name, value in (
            ("baseline", ratio(rate, base_rate)),
            ("two relays", ratio(rate, two_hop_rate)),
        )
        if value is not None
    ]
    note = _join(
        f"{orch['orders']:,} orders",
        _cores(orch),
        _per_transition(orch, "orchestrator"),
        ", ".join(against),
        "" if r is not None else "no minimal step to compare with",
    )
    return Figure(
        "orchestrator_transitions_per_s",
        "Orchestrator alone (stub workers)",
        rate,
        "transitions/s",
        r,
        "minimal step",
        f">= {GOAL_ORCHESTRATOR_RATIO:g}x minimal step",
        NO_GOAL if r is None else _status(r >= GOAL_ORCHESTRATOR_RATIO),
        note=note,
    )


def _per_saga(rung: Mapping[str, Any]) -> str:
    """CPU time per saga by process (the workers together) and what the planner knew, e.g.
    "per saga: orch 1.80, pg 0.70, mq 1.50, workers 1.65 ms CPU; no table analyzed (autovacuum
    off)"."""
    per = rung.get("cpu_ms_per_saga") or {}
    workers = sum(v for k, v in per.items() if k in ("payments", "inventory", "shipping"))
    parts = [f"{_SHORT[k]} {per[k]:.2f}" for k in ("orchestrator", "postgresql", "rabbitmq")
             if k in per]  # fmt: skip
    if workers:
        parts.append(f"workers {workers:.2f}")
    text = "per saga: " + ", ".join(parts) + " ms CPU" if parts else ""
    planner = rung.get("planner")
    if planner:
        analyzed = planner.get("analyzed") or {}
        stats = (
            f"{len(analyzed)} of {planner['tables']} tables analyzed"
            if analyzed
            else ("no table analyzed")
        )
        text = _join(text, f"{stats} (autovacuum {planner['autovacuum']})")
    return text


def _guessed(rung: Mapping[str, Any]) -> str:
    """The share of the orchestrator's batches decided without their read, e.g. "batches
    decided from the snapshot cache: 41% (8 guesses missed)"."""
    guesses = rung.get("snapshot_guesses") or {}
    share = guesses.get("share_held")
    if share is None:
        return ""
    return (
        f"batches decided from the snapshot cache: {share:.0%} ({guesses['missed']:,} guesses"
        " missed)"
    )


def _e2e(e2e: Mapping[str, Any], base_rate: float | None) -> Figure:
    rate = e2e.get("sagas_per_s")
    hops = ratio(rate * HOPS_PER_ORDER if rate else None, base_rate)
    note = f"{e2e['orders']:,} orders"
    if hops is not None:
        note += f"; {HOPS_PER_ORDER} hops/saga = {hops:.2f}x baseline msgs/s"
    return Figure(
        "e2e_sagas_per_s",
        "End to end, real workers",
        rate,
        "sagas/s",
        goal=f">= {GOAL_E2E_SAGAS_PER_S:g} sagas/s",
        status=_status(rate is not None and rate >= GOAL_E2E_SAGAS_PER_S),
        note=_join(note, _cores(e2e), _per_saga(e2e), _guessed(e2e)),
    )


def _growth(e2e: Mapping[str, Any]) -> list[Figure]:
    """One figure per later size: its rate as a ratio to the first size's; the last has the
    goal (tables grown to GOAL_GROWTH_ORDERS sagas during the run, never analyzed)."""
    rungs = e2e.get("growth") or []
    if len(rungs) < 2:
        return []
    first = rungs[0]
    out = []
    for index, rung in enumerate(rungs[1:], start=1):
        r = ratio(rung.get("sagas_per_s"), first.get("sagas_per_s"))
        last = index == len(rungs) - 1
        goal = f">= {GOAL_GROWTH_RATIO:g}x {first['orders']:,} orders" if last else None
        status = NO_GOAL
        if last and r is not None:
            status = _status(r >= GOAL_GROWTH_RATIO)
        out.append(
            Figure(
                f"e2e_growth_{index}_sagas_per_s",
                f"End to end, {rung['orders']:,} orders",
                rung.get("sagas_per_s"),
                "sagas/s",
                r,
                f"{first['orders']:,} orders",
                goal,
                status,
                at_goal_size=not last or rung["orders"] >= GOAL_GROWTH_ORDERS,
                note=_join(_per_saga(rung), _guessed(rung)),
            )
        )
    return out


def _relay_latency(lat: Mapping[str, Any]) -> Figure:
    relay = lat["relay"]
    return Figure(
        "latency_relay_p99_ms",
        "Bare relay latency p99 at the same rate",
        relay.get("p99_ms"),
        "ms",
        goal="reference",
        note=_join(
            f"{relay['messages']:,} msgs copied at {relay['offered_msgs_per_s']:,.0f}"
            f" arrivals/s; p50 {relay['p50_ms']:.1f}, p95 {relay['p95_ms']:.1f} ms",
            f"loop: {relay['loop']}" if relay.get("loop") else "",
            "stages p50: " + stage_text(relay["stages_p50_ms"]),
            "slowest 1%: " + stage_text(relay["stages_tail_ms"]),
            _cores(relay),
            _relay_cpu(relay),
        ),
    )


def _relay_cpu(relay: Mapping[str, Any]) -> str:
    """The relay's CPU per arrival: the counterpart of the orchestrator's per transition (each
    transition is one arrival there; on both sides three in four arrivals send a message on)."""
    cores = (relay.get("cpu_cores") or {}).get("relay")
    rate = relay.get("offered_msgs_per_s")
    if cores is None or not rate:
        return ""
    return f"relay CPU {cores / rate * 1000:.2f} ms per arrival"


def _batch_cpu(lat: Mapping[str, Any]) -> str:
    """How the events were batched and what the orchestrator's CPU cost per transition and per
    batch, e.g. "batches: 65.0/s of 11.20 deliveries; orch CPU 0.80 ms per transition, 8.77 ms
    per batch". Beside the orchestrator section's per-transition figure (full batches) it shows
    how much of the load at this rate is per batch rather than per message. The cores are
    measured while the load is offered and the batch rate over the whole stage log, which adds
    the second or so of draining: close enough for a cost that is 3 ms or 10 ms."""
    batching = lat.get("batching")
    if not batching:
        return ""
    cores = (lat.get("cpu_cores") or {}).get("orchestrator")
    rate = lat.get("achieved_transitions_per_s") or lat.get("offered_transitions_per_s")
    text = f"batches: {batching['per_s']:.1f}/s of {batching['mean_size']:.2f} deliveries"
    if cores is None or not rate or not batching["per_s"]:
        return text
    return (
        f"{text}; orch CPU {cores / rate * 1000:.2f} ms per transition,"
        f" {cores / batching['per_s'] * 1000:.2f} ms per batch"
    )


def _latency(lat: Mapping[str, Any], q: str) -> Figure:
    value = lat.get(f"{q}_ms")
    offered = lat.get("offered_transitions_per_s") or 0.0
    label = f"Latency {q}, event arrival -> command confirmed"
    if q != "p99":
        return Figure(
            f"latency_{q}_ms",
            label,
            value,
            "ms",
            note=_join(
                f"{lat['count']:,} commands at {offered:,.0f} transitions/s" + _load(lat),
                "stages p50: " + stage_text(lat["stages_p50_ms"]) if q == "p50" else "",
                _parts("transaction p50", lat.get("transaction_parts_p50_ms"))
                if q == "p50"
                else "",
                _batch_cpu(lat) if q == "p50" else "",
            ),
        )
    r = lat.get("p99_ratio")
    return Figure(
        "latency_p99_ms",
        label,
        value,
        "ms",
        r,
        "relay p99",
        f"<= {GOAL_P99_RATIO:g}x relay p99",
        NO_GOAL if r is None else _status(r <= GOAL_P99_RATIO),
        note=_join(
            "slowest 1%: " + stage_text(lat["stages_tail_ms"]),
            _parts("their transaction", lat.get("transaction_parts_tail_ms")),
            _tail_spread(lat),
            _cores(lat),
            _rounds(lat),
        ),
    )


def _tail_spread(lat: Mapping[str, Any]) -> str:
    """When the round's slowest 1% arrived: spread over the round (queueing) or piled into a
    second or two (a stall); the relay's beside it."""
    ours, relay = lat.get("tail_spread"), (lat.get("relay") or {}).get("tail_spread")
    if not ours:
        return ""
    text = (
        f"slowest 1% arrived in {ours['seconds']:.0f} of the round's {ours['of_seconds']:.0f} s"
        f" ({ours['busiest_share']:.0%} in the busiest second)"
    )
    if relay:
        text += (
            f", the relay's in {relay['seconds']:.0f} of {relay['of_seconds']:.0f} s"
            f" ({relay['busiest_share']:.0%})"
        )
    return text


def _spread_pair(pair: Sequence[Mapping[str, float] | None]) -> str:
    return "/".join(
        "?" if not side else f"{side['seconds']:.0f} s {side['busiest_share']:.0%}" for side in pair
    )


def _load(lat: Mapping[str, Any]) -> str:
    """What the offered rate was a fraction of: the orchestrator alone, measured at the start of
    the round (runs from before that measurement, or with --latency-rate, have none)."""
    alone = lat.get("orchestrator_alone_per_s")
    offered = lat.get("offered_transitions_per_s")
    if not alone or not offered:
        return ""
    return f" ({offered / alone:.2f} of the orchestrator alone's {alone:,.0f} just before)"


def _parts(label: str, parts: Mapping[str, float] | None) -> str:
    """The transaction's parts (runs from before the breakdown existed have none)."""
    return f"{label}: {stage_text(parts)}" if parts else ""


def _rounds(lat: Mapping[str, Any]) -> str:
    """Every round's ratio when the pair was measured more than once (--repeat)."""
    ratios = lat.get("rounds") or []
    if len(ratios) < 2:
        return ""
    shown = ", ".join("?" if r is None else f"{r:.2f}" for r in ratios)
    text = f"median of {len(ratios)} rounds, ratios {shown}"
    offered = lat.get("rounds_offered_per_s") or []
    if len(offered) == len(ratios):
        text += " at " + ", ".join(f"{rate:,.0f}" for rate in offered) + " transitions/s"
    pooled = lat.get("pooled")
    if pooled and pooled.get("p99_ratio") is not None:
        text += (
            f"; pooled rounds: p99 {pooled['p99_ms']:.1f} ms against the relay's"
            f" {pooled['relay_p99_ms']:.1f} = {pooled['p99_ratio']:.2f}x"
        )
    steal = lat.get("rounds_steal") or []
    if any(value is not None for pair in steal for value in pair):
        shown = ", ".join(
            "/".join("?" if v is None else f"{v:.2f}" for v in pair) for pair in steal
        )
        text += f"; cores stolen by the hypervisor per round (relay/orchestrator): {shown}"
    spreads = lat.get("rounds_tail_spread") or []
    if any(any(pair) for pair in spreads):
        shown = ", ".join(_spread_pair(pair) for pair in spreads)
        text += (
            "; seconds holding the slowest 1%, and the busiest one's share, per round"
            f" (relay/orchestrator): {shown}"
        )
    return text


def _scale(scale: Mapping[str, Any], section_rate: float | None) -> Figure:
    """The seeded rate against the empty-table run measured right after it; runs from before
    that reference existed are compared with the orchestrator section's rate."""
    rate = scale.get("transitions_per_s")
    beside = scale.get("empty_beside") or {}
    empty_rate = beside.get("transitions_per_s", section_rate)
    r = ratio(rate, empty_rate)
    at_size = scale["finished"] >= GOAL_FINISHED and scale["live"] >= GOAL_LIVE
    note = f"{scale['orders']:,} orders; database {scale.get('database_size', '?')}"
    if beside:
        note += f"; empty tables right after: {format_value(empty_rate)} transitions/s"
        if section_rate is not None:
            note += f" (orchestrator section: {format_value(section_rate)})"
    wal = scale.get("wal_per_transition") or {}
    if wal:
        note += f"; WAL {wal['wal_bytes'] / 1024:.1f} kB, {wal['wal_fpi']:.2f} FPI per transition"
    if not at_size:
        note += f"; the goal is for {_count(GOAL_FINISHED)} + {_count(GOAL_LIVE)}"
    return Figure(
        "scale_transitions_per_s",
        f"Orchestrator, {_count(scale['finished'])} finished + {_count(scale['live'])} live",
        rate,
        "transitions/s",
        r,
        "empty tables",
        f">= {GOAL_SCALE_RATIO:g}x empty",
        NO_GOAL if r is None else _status(r >= GOAL_SCALE_RATIO),
        at_size,
        note,
    )


def _timers(timers: Mapping[str, Any]) -> Figure:
    count = int(timers["timers"])
    seconds = float(timers["seconds"])
    at_size = count >= GOAL_TIMERS
    judged = seconds if at_size else projected_timer_seconds(timers)
    note = _join(f"ready after {timers['ready_seconds']:.1f} s", _cores(timers))
    if timers.get("timers_per_s"):
        note += f"; {timers['timers_per_s']:,.0f} timers/s"
    if not at_size:
        note += f"; projected to {_count(GOAL_TIMERS)}: {judged:,.0f} s"
    if not timers["fired_once"]:
        note += (
            f"; NOT each fired once: {timers['sagas_fired']:,} sagas fired, "
            f"{timers['fired_more_than_once']} more than once, {timers['due_timers_left']} left"
        )
    return Figure(
        "timers_all_fired_seconds",
        f"{_count(count)} due timers, all fired",
        seconds,
        "s",
        goal=f"<= {GOAL_TIMER_SECONDS:g} s, each once",
        status=_status(bool(timers["fired_once"]) and judged <= GOAL_TIMER_SECONDS),
        at_goal_size=at_size,
        note=note,
    )


def figures(results: Results, errors: Mapping[str, str] | None = None) -> list[Figure]:
    """Every figure of the table, in order, with ratios and goal checks."""
    errors = errors or {}
    base = results.get("baseline")
    orch = results.get("orchestrator")
    base_rate = base.get("msgs_per_s") if base else None
    two_hop_rate = base.get("two_hop_msgs_per_s") if base else None
    orch_rate = orch.get("transitions_per_s") if orch else None
    minimal = results.get("minimal")
    minimal_rate = minimal.get("transitions_per_s") if minimal else None
    out: list[Figure] = []
    out.append(
        _baseline(base)
        if base
        else _missing(
            "baseline_msgs_per_s", "Bare relay baseline", "msgs/s", "reference", "baseline", errors
        )
    )
    out.append(
        _two_hop(base)
        if base and base.get("two_hop_msgs_per_s") is not None
        else _missing(
            "two_hop_msgs_per_s", "Two relays at once", "msgs/s", "reference", "baseline", errors
        )
    )
    out.append(
        _minimal(minimal, base_rate)
        if minimal
        else _missing(
            "minimal_transitions_per_s",
            "Minimal step (raw asyncpg + aio-pika)",
            "transitions/s",
            "reference",
            "minimal",
            errors,
        )
    )
    out.append(
        _orchestrator(orch, minimal_rate, base_rate, two_hop_rate)
        if orch
        else _missing(
            "orchestrator_transitions_per_s",
            "Orchestrator alone (stub workers)",
            "transitions/s",
            f">= {GOAL_ORCHESTRATOR_RATIO:g}x minimal step",
            "orchestrator",
            errors,
        )
    )
    e2e = results.get("e2e")
    out.append(
        _e2e(e2e, base_rate)
        if e2e
        else _missing(
            "e2e_sagas_per_s",
            "End to end, real workers",
            "sagas/s",
            f">= {GOAL_E2E_SAGAS_PER_S:g} sagas/s",
            "e2e",
            errors,
        )
    )
    if e2e:
        out.extend(_growth(e2e))
    lat = results.get("latency")
    out.append(
        _relay_latency(lat)
        if lat
        else _missing(
            "latency_relay_p99_ms",
            "Bare relay latency p99 at the same rate",
            "ms",
            "reference",
            "latency",
            errors,
        )
    )
    for q in ("p50", "p95", "p99"):
        out.append(
            _latency(lat, q)
            if lat
            else _missing(
                f"latency_{q}_ms",
                f"Latency {q}",
                "ms",
                f"<= {GOAL_P99_RATIO:g}x relay p99" if q == "p99" else None,
                "latency",
                errors,
            )
        )
    scale = results.get("scale")
    out.append(
        _scale(scale, orch_rate)
        if scale
        else _missing(
            "scale_transitions_per_s",
            "Orchestrator with seeded tables",
            "transitions/s",
            f">= {GOAL_SCALE_RATIO:g}x empty",
            "scale",
            errors,
        )
    )
    timers = results.get("timers")
    out.append(
        _timers(timers)
        if timers
        else _missing(
            "timers_all_fired_seconds",
            "Due timers, all fired",
            "s",
            f"<= {GOAL_TIMER_SECONDS:g} s, each once",
            "timers",
            errors,
        )
    )
    return out


def projected_timer_seconds(timers: Mapping[str, Any]) -> float:
    """Start-up plus firing time scaled linearly to the goal's number of timers."""
    ready = float(timers.get("ready_seconds") or 0.0)
    firing = max(0.0, float(timers["seconds"]) - ready)
    return ready + firing * GOAL_TIMERS / max(1, int(timers["timers"]))


def _count(n: int) -> str:
    if n >= 1_000_000 and n % 100_000 == 0:
        return f"{n / 1_000_000:g}M"
    if n >= 1_000 and n % 100 == 0:
        return f"{n / 1_000:g}k"
    return f"{n:,}"


def format_value(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


_STYLE = {PASS: "green", FAIL: "red", ERROR: "red", NOT_RUN: "dim", NO_GOAL: "dim"}


def status_text(figure: Figure) -> str:
    text = figure.status
    if figure.status in (PASS, FAIL) and not figure.at_goal_size:
        text += "*"
    return text


def table(figs: list[Figure], machine: Mapping[str, Any], title: str = "sagaline bench") -> Table:
    out = Table(
        title=title, caption=summary_line(machine), caption_justify="left", show_lines=False
    )
    out.add_column("figure")
    out.add_column("value", justify="right")
    out.add_column("unit")
    out.add_column("ratio", justify="right")
    out.add_column("goal")
    out.add_column("result")
    out.add_column("notes", overflow="fold")
    for f in figs:
        ratio_text = f"{f.ratio:.2f}x {f.ratio_to}" if f.ratio is not None else ""
        style = _STYLE.get(f.status, "")
        out.add_row(
            f.label,
            format_value(f.value),
            f.unit,
            ratio_text,
            f.goal or "",
            f"[{style}]{status_text(f)}[/]" if style else status_text(f),
            f.note,
        )
    return out


BUSY_OTHER_CORES = 0.5
"""Cores used by other processes during a measurement above which it is flagged as noisy."""


def busy_sections(results: Results) -> dict[str, float]:
    """Sections measured while other processes used more than BUSY_OTHER_CORES cores."""
    busy: dict[str, float] = {}
    for name, result in results.items():
        for key in ("cpu_cores", "two_hop_cpu_cores"):
            other = (result.get(key) or {}).get("other")
            if other is not None and other > BUSY_OTHER_CORES:
                busy[name] = max(busy.get(name, 0.0), float(other))
    return busy


def overall(figs: list[Figure]) -> dict[str, Any]:
    judged = [f for f in figs if f.status in (PASS, FAIL)]
    return {
        "goals_met": all(f.status == PASS for f in judged) and bool(judged),
        "passed": sum(1 for f in judged if f.status == PASS),
        "failed": sum(1 for f in judged if f.status == FAIL),
        "errors": sum(1 for f in figs if f.status == ERROR),
        "below_goal_size": [f.key for f in judged if not f.at_goal_size],
    }


def document(
    *,
    figs: list[Figure],
    results: Results,
    errors: Mapping[str, str],
    machine: Mapping[str, Any],
    config: Mapping[str, Any],
    command: list[str],
    started_at: str,
    finished_at: str,
) -> dict[str, Any]:
    """The JSON written by --json-out: the same figures as the table, plus the raw results."""
    return {
        "schema": SCHEMA,
        "command": command,
        "started_at": started_at,
        "finished_at": finished_at,
        "machine": dict(machine),
        "config": dict(config),
        "figures": [f.to_json() for f in figs],
        "summary": {**overall(figs), "busy_sections": busy_sections(results)},
        "results": {k: dict(v) for k, v in results.items()},
        "errors": dict(errors),
    }
