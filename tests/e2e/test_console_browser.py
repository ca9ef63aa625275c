"""The console in a real browser (headless Chromium through chromedriver), against the real
console process, broker and database, with the orchestrator and the order workers running:
an operator logs in, finds the stuck saga, opens it, replays its parked payment after the fix
and watches the saga complete; a viewer's attempt to act is refused. The screenshots in README
(docs/screenshots/) are taken by this test: it writes them there when SAGALINE_SCREENSHOTS names
that folder, and to a temporary folder otherwise (a test run leaves the checkout unchanged).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from sagaline.db import create_unpooled_engine
from sagaline.settings import Settings
from sagaline_tools.console.accounts import Accounts
from tests.conftest import own_database
from tests.integration.console_support import private_namespace
from tests.integration.test_admin import (
    SKU,
    Stack,
    failing,
    saga_state,
    submit,
    wait_parked,
    wait_state,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip(
        "headless Chromium is not installed (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )


def screenshots_folder(tmp_path: Path) -> Path:
    """docs/screenshots/ when SAGALINE_SCREENSHOTS names it; otherwise the test's own temporary
    folder, which pytest prunes (a run leaves neither the checkout nor /tmp growing)."""
    folder = Path(os.environ.get("SAGALINE_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def system(settings: Settings) -> AsyncIterator[tuple[Settings, AsyncEngine]]:
    from consumers.inventory.handlers import seed_stock

    async with (
        own_database(
            settings,
            step_timeout_seconds=600.0,
            relay_poll_seconds=0.2,
            timer_poll_seconds=0.2,
            parking_scan_seconds=3600.0,
            db_pool_size=3,
        ) as db_own,
        private_namespace(db_own) as own,
    ):
        engine = create_unpooled_engine(own.sqlalchemy_url)
        try:
            async with engine.begin() as conn:
                await seed_stock(conn, {SKU: 100})
            accounts = Accounts(engine)
            await accounts.add("olga", "operator", PASSWORD)
            await accounts.add("vera", "viewer", PASSWORD)
            yield own, engine
        finally:
            await engine.dispose()


@contextlib.contextmanager
def console_process(settings: Settings, port: int, log: Path) -> Iterator[str]:
    env = {
        **os.environ,
        "AMQP_URL": settings.amqp_url,
        "DATABASE_URL": settings.database_url,
        "SAGALINE_NAMESPACE": settings.namespace,
        "SAGALINE_RETRY_DELAYS": ",".join(str(d) for d in settings.retry_delays),
        "SAGALINE_STEP_TIMEOUT_SECONDS": str(settings.step_timeout_seconds),
        # Stuck after 1 s, so the saga waiting for its payment shows as stuck at once.
        "SAGALINE_CONSOLE_STUCK_AFTER_MINUTES": str(1 / 60),
        "SAGALINE_CONSOLE_RECONCILE_SECONDS": "1",
    }
    argv = [sys.executable, "-m", "sagaline_tools.cli", "console", "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/readyz", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the console did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
        "--window-size=1400,1250", "--force-device-scale-factor=1",
    ):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


class Browser:
    """Selenium's blocking calls off the event loop (the orchestrator and workers run on it)."""

    def __init__(self, driver: Any, url: str, shots: Path) -> None:
        self.driver = driver
        self.url = url
        self.shots = shots

    async def do(self, work: Callable[[Any], Any]) -> Any:
        return await asyncio.to_thread(work, self.driver)

    async def open(self, path: str) -> None:
        await self.do(lambda d: d.get(self.url + path))

    async def click(self, css: str) -> None:
        from selenium.webdriver.common.by import By

        await self.do(lambda d: d.find_element(By.CSS_SELECTOR, css).click())

    async def fill(self, css: str, value: str) -> None:
        from selenium.webdriver.common.by import By

        def work(d: Any) -> None:
            element = d.find_element(By.CSS_SELECTOR, css)
            element.clear()
            element.send_keys(value)

        await self.do(work)

    async def text(self, css: str = "body") -> str:
        from selenium.webdriver.common.by import By

        return str(await self.do(lambda d: d.find_element(By.CSS_SELECTOR, css).text))

    async def wait_text(
        self, css: str, pattern: str, within: float = 30.0, *, reload: bool = False
    ) -> str:
        from selenium.common.exceptions import NoSuchElementException

        seen = ""
        try:
            async with asyncio.timeout(within):
                while True:
                    # Right after a click the browser may still show the previous page: the
                    # element appears with the next one.
                    with contextlib.suppress(NoSuchElementException):
                        if re.search(pattern, seen := await self.text(css)):
                            break
                    await asyncio.sleep(0.25)
                    if reload:
                        await self.do(lambda d: d.refresh())
        except TimeoutError:
            raise AssertionError(f"{css}: {seen!r} never matched {pattern!r}") from None
        return seen

    async def shot(self, name: str) -> None:
        path = self.shots / f"{name}.png"
        await self.do(lambda d: d.save_screenshot(str(path)))
        assert path.read_bytes().startswith(b"\x89PNG"), f"{path} is not a PNG"

    async def login(self, name: str) -> None:
        await self.open("/login")
        await self.fill("input[name=name]", name)
        await self.fill("input[name=password]", PASSWORD)
        await self.click("form.login button")
        await self.wait_text("#who", rf"^{name} ")


async def test_operator_finds_a_stuck_saga_and_replays_its_payment_after_the_fix(
    system: tuple[Settings, AsyncEngine], tmp_path: Path
) -> None:
    settings, db = system
    stack = Stack(settings)
    try:
        await stack.start("orchestrator")
        await stack.start("payments", failing("ProcessPayment"))
        await stack.start("inventory")
        await stack.start("shipping")
        saga_id = await submit(settings)
        await wait_parked(settings, "payments", 1)
        port = _free_port()
        with console_process(settings, port, tmp_path / "console.log") as url, chromium() as d:
            b = Browser(d, url, screenshots_folder(tmp_path))
            # Log in; the overview shows the stuck saga and the parked payment.
            await b.open("/")
            assert "/login" in await b.do(lambda d: d.current_url)
            await b.login("olga")
            # Parked before the console's feed queue existed: the reconciler indexes it.
            await b.wait_text("#parked", "retries-exhausted", reload=True)
            await b.wait_text("#stuck", "awaiting_payment", reload=True)
            await b.shot("overview")

            # Find the stuck saga and open it.
            await b.click("#stuck a")
            listed = await b.wait_text("#sagas", str(saga_id))
            assert "awaiting_payment" in listed
            await b.click(f"a[href='/sagas/{saga_id}']")
            await b.wait_text("#state", "awaiting_payment")
            current = await b.do(
                lambda d: d.find_element("css selector", "svg .state.current").text
            )
            assert current == "awaiting_payment"
            assert "ProcessPayment" in await b.text("#saga-parked")
            assert "ProcessPayment" in await b.text("#waits")
            await b.shot("saga")
            await b.open("/dlq")
            await b.wait_text("#groups", "InjectedFault")
            await b.shot("dead-letters")
            await b.open(f"/sagas/{saga_id}")

            # The fix is deployed; replay the parked payment: preview first, then confirm.
            await stack.restart("payments")
            await b.click("#replay-saga-parked")
            summary = await b.wait_text("#preview-summary", "Nothing has been replayed yet")
            assert "1 parked message" in summary
            await b.fill("form input[name=reason]", "payments fixed in 1.4.2")
            await b.shot("replay-preview")
            await b.click("#confirm")
            await b.wait_text("#job-status", "^done$")
            assert "1 of 1 replayed" in (await b.text("#job")).replace("\n", " ")
            await b.shot("replay-job")
            await wait_state(db, saga_id, "completed")
            await b.open(f"/sagas/{saga_id}")
            await b.wait_text("#state", "completed")
            timeline = await b.text("#timeline")
            assert "operator:olga" in timeline and "payments fixed in 1.4.2" in timeline

            # A viewer reads the same page, has no buttons, and an action it sends is refused.
            await b.click(".who button")
            await b.login("vera")
            await b.open(f"/sagas/{saga_id}")
            await b.wait_text("#state", "completed")
            assert not await b.do(lambda d: d.find_elements("css selector", "section.actions"))
            await b.open("/dlq")
            await b.do(
                lambda d: d.execute_script(
                    """
                    const form = document.createElement("form");
                    form.method = "post";
                    form.action = "/sagas/" + arguments[0] + "/retry";
                    for (const [name, value] of [["reason", "just looking"],
                        ["csrf", arguments[1]]]) {
                      const input = document.createElement("input");
                      input.name = name; input.value = value; form.appendChild(input);
                    }
                    document.body.appendChild(form);
                    form.submit();
                    """,
                    str(saga_id),
                    d.find_element("css selector", "input[name=csrf]").get_attribute("value"),
                )
            )
            refused = await b.wait_text("#problem", "viewers can look but not act")
            assert refused
            await b.shot("viewer-refused")
        assert await saga_state(db, saga_id) == "completed"
    finally:
        await stack.close()
