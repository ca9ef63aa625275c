"""`sagaline demo order`: publish a mix of sample orders and watch their sagas finish.

Talks to a running system (`sagaline up` or docker compose) only through its public surface:
events on the events exchange, saga rows in the database. Exit code 0 when every order
reached the final state its scenario predicts, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.live import Live
from rich.table import Table

from sagaline.settings import Settings
from sagaline.tls import amqp_connect_options
from sagaline_tools.cli import common
from sagaline_tools.cli.checks import check_broker, check_database
from sagaline_tools.cli.demo_mix import FINAL_STATES, MIX, DemoOrder, DemoPlan, build_orders
from sagaline_tools.cli.output import CliError, one_line, print_json, stdout, warning_line

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

demo_app = typer.Typer(
    help="Run sample workloads against a running sagaline.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    from sagaline_tools.cli import demo_workflows

    demo_workflows.register(demo_app)
    app.add_typer(demo_app, name="demo")


@demo_app.command("order")
def order(
    count: Annotated[
        int, typer.Option("--count", "-n", min=1, max=10_000, help="How many orders to publish.")
    ] = 10,
    timeout: Annotated[
        float,
        typer.Option(min=1.0, help="Seconds to wait for every saga to reach a final state."),
    ] = 60.0,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the final summary as JSON on stdout.")
    ] = False,
) -> None:
    """Publish sample orders and show their sagas until every one is final.

    The orders cycle through five outcomes: success, declined payment, out of stock,
    unsupported destination and customer cancellation. Exits 1 unless each order ends in the
    state its outcome predicts.
    """
    settings = common.load_settings()
    plan = build_orders(count, run_tag=uuid.uuid4().hex[:8])
    # A live table only on a terminal; elsewhere (CI, a file) just the final table.
    live = not json_output and stdout().is_terminal
    progress = common.run(_run(settings, plan, timeout, live=live))
    summary = progress.summary()
    if json_output:
        print_json(summary)
    else:
        if not live:
            stdout().print(_render(progress))
        _print_outcome(progress)
    if not summary["ok"]:
        raise typer.Exit(1)


@dataclass
class Progress:
    plan: DemoPlan
    timeout: float
    started: float = field(default_factory=time.monotonic)
    states: dict[uuid.UUID, str] = field(default_factory=dict)
    finished: set[uuid.UUID] = field(default_factory=set)
    """Sagas whose row says finished: final even in a state this CLI does not know yet."""
    finished_in: float | None = None

    def state(self, item: DemoOrder) -> str | None:
        return self.states.get(item.saga_id)

    def is_final(self, item: DemoOrder) -> bool:
        return item.saga_id in self.finished or self.state(item) in FINAL_STATES

    @property
    def done(self) -> bool:
        return all(self.is_final(item) for item in self.plan.orders)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def summary(self) -> dict[str, Any]:
        orders = [
            {
                "order_id": item.order_id,
                "saga_id": str(item.saga_id),
                "scenario": item.scenario.value,
                "expected_state": item.expected_state,
                "state": self.state(item),
                "as_expected": self.state(item) == item.expected_state,
            }
            for item in self.plan.orders
        ]
        return {
            "ok": all(entry["as_expected"] for entry in orders),
            "run_tag": self.plan.run_tag,
            "count": len(orders),
            "as_expected": sum(1 for entry in orders if entry["as_expected"]),
            "pending": sum(1 for item in self.plan.orders if not self.is_final(item)),
            "states": dict(Counter(str(entry["state"]) for entry in orders)),
            "elapsed_seconds": round(self.finished_in or self.elapsed, 3),
            "orders": orders,
        }


async def _run(settings: Settings, plan: DemoPlan, wait_seconds: float, *, live: bool) -> Progress:
    await check_broker(settings)
    if not await check_database(settings):
        raise CliError("the database does not exist; start the system first (`sagaline up`)")

    from sagaline.db import create_unpooled_engine

    engine = create_unpooled_engine(settings.sqlalchemy_url)
    try:
        await _seed(engine, plan.stock)
        await _publish(settings, plan)
        progress = Progress(plan, wait_seconds)
        if live:
            with Live(console=stdout(), auto_refresh=False) as display:
                await _watch(
                    engine, progress, lambda: display.update(_render(progress), refresh=True)
                )
        else:
            await _watch(engine, progress, lambda: None)
        return progress
    finally:
        await engine.dispose()


async def _seed(engine: AsyncEngine, stock: dict[str, int]) -> None:
    try:
        from consumers.inventory.handlers import seed_stock
    except ImportError:
        raise CliError(
            "cannot seed stock: consumers.inventory.handlers.seed_stock is not available"
        ) from None
    try:
        async with engine.begin() as conn:
            await seed_stock(conn, stock)
    except Exception as exc:
        raise CliError(
            f"seeding stock failed ({one_line(exc)}); is the schema migrated (`sagaline migrate`)?"
        ) from None


async def _publish(settings: Settings, plan: DemoPlan) -> None:
    import aio_pika
    from aiormq.exceptions import ChannelNotFoundEntity, DeliveryError

    from contracts.envelope import new_envelope
    from sagaline.messaging.publish import publish_envelope

    topology = settings.topology
    connection = await aio_pika.connect(
        settings.amqp_url, timeout=10, **amqp_connect_options(settings)
    )
    try:
        # Check on a throwaway channel: a failed passive declare closes the channel it used.
        probe = await connection.channel()
        try:
            await probe.declare_exchange(topology.events_exchange, passive=True)
            queue = await probe.declare_queue(topology.work_queue("orchestrator"), passive=True)
        except ChannelNotFoundEntity:
            raise CliError(
                f"{topology.events_exchange} or its orchestrator queue does not exist; "
                "start the system first (`sagaline up`)"
            ) from None
        if not queue.declaration_result.consumer_count:
            warning_line(
                f"no orchestrator is consuming {queue.name}; orders will wait until one does"
            )
        await probe.close()

        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        for item in plan.orders:
            for event in item.events:
                envelope = new_envelope(event, correlation_id=item.saga_id)
                try:
                    await publish_envelope(channel, topology.events_exchange, envelope)
                except DeliveryError:
                    raise CliError(
                        f"{envelope.type} was not routed to any queue; is the orchestrator "
                        "bound to it?"
                    ) from None
    finally:
        await connection.close()


async def _watch(engine: AsyncEngine, progress: Progress, refresh: Callable[[], None]) -> None:
    from sqlalchemy import select

    from orchestrator.store.tables import instances

    ids = [item.saga_id for item in progress.plan.orders]
    query = select(instances.c.id, instances.c.state, instances.c.finished_at).where(
        instances.c.id.in_(ids)
    )
    while True:
        try:
            async with engine.connect() as conn:
                rows = (await conn.execute(query)).all()
        except Exception as exc:
            raise CliError(f"reading saga states failed: {one_line(exc)}") from None
        progress.states = {row.id: row.state for row in rows}
        progress.finished = {row.id for row in rows if row.finished_at is not None}
        refresh()
        if progress.done:
            progress.finished_in = progress.elapsed
            return
        if progress.elapsed >= progress.timeout:
            return
        await asyncio.sleep(0.5)


def _render(progress: Progress) -> Table:
    title = f"demo orders — {progress.elapsed:.1f}s of {progress.timeout:g}s"
    table = Table(title=title)
    table.add_column("scenario", no_wrap=True)
    table.add_column("expected", no_wrap=True)
    table.add_column("orders", justify="right")
    table.add_column("as expected", justify="right", style="green")
    table.add_column("other", justify="right", style="red")
    table.add_column("pending", justify="right", style="yellow")
    for scenario in MIX:
        items = [item for item in progress.plan.orders if item.scenario is scenario]
        if not items:
            continue
        good = sum(1 for item in items if progress.state(item) == item.expected_state)
        pending = sum(1 for item in items if not progress.is_final(item))
        table.add_row(
            scenario.value,
            items[0].expected_state,
            str(len(items)),
            str(good),
            str(len(items) - good - pending),
            str(pending),
        )
    return table


_LISTED = 25


def _print_outcome(progress: Progress) -> None:
    console = stdout()
    wrong = [item for item in progress.plan.orders if progress.state(item) != item.expected_state]
    if not wrong:
        console.print(
            f"[green]✓[/] all {len(progress.plan.orders)} orders reached their expected state "
            f"in {progress.finished_in or progress.elapsed:.1f}s"
        )
        return
    # One line per order rather than a table: ids stay whole, ready to copy into other tools.
    for item in wrong[:_LISTED]:
        state = progress.state(item) or "no saga yet"
        console.print(
            f"  {item.order_id} ({item.scenario.value}): expected {item.expected_state}, "
            f"got [red]{state}[/] — saga {item.saga_id}",
            soft_wrap=True,
        )
    if len(wrong) > _LISTED:
        console.print(f"  … and {len(wrong) - _LISTED} more (--json lists them all)")
    console.print(
        f"[red]✗[/] {len(wrong)} of {len(progress.plan.orders)} orders did not reach "
        "their expected state"
    )
