"""The operations console in a real headless browser (Debian's chromium driven by Playwright):
log in through the form, find the dead letter a failing handler produced on the session's
Kafka, replay it (accepting the confirmation), see it marked replayed by the admin and the
handler handle it; retry a saga that needs attention and requeue a parked outbox row the same
way; every page renders with no console error (a CSP violation is one), page
error, failed request, 4xx/5xx or request to another origin. Screenshots in reports/browser/.

The gateway is the real one, served in the test's loop with a stand-in for auth's login
(tests/console_rig.py)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, Dialog, Page, async_playwright

from core.config import KafkaConfig
from core.messaging import KafkaEventBus, dlq
from core.messaging.handlers import HandlerRegistry
from core.messaging.kafka_client import KafkaAdmin
from core.resilience.retry import RetryPolicy
from tests.browser.test_docs_browser import ARGS, CHROMIUM, SHOTS
from tests.console_rig import ADMIN, PASSWORD, SAGA, console_stack, park
from tests.helpers import OrderPlaced, eventually, order_registry, placed, unique

pytestmark = pytest.mark.kafka


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        await launched.close()


def watch(page: Page, base: str) -> list[str]:
    """Everything that would show a broken page, collected as it happens."""
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console: {m.text}")
            if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"{r.url}: {r.failure}"))
    page.on("response", lambda r: problems.append(f"{r.url}: {r.status}")
            if r.status >= 400 else None)
    page.on("request", lambda r: problems.append(f"outside: {r.url}")
            if not r.url.startswith(base + "/") else None)
    return problems


async def test_log_in_see_a_dead_letter_replay_it_and_see_it_handled(
        kafka: object, browser: Browser) -> None:
    bootstrap: str = kafka.bootstrap_servers  # type: ignore[attr-defined]
    topic = unique("console-orders")
    config = KafkaConfig(bootstrap, unique("console-test"), unique("billing"))
    await KafkaAdmin(config).create_topics([topic], partitions=1)
    broken = True
    handled: list[str] = []
    handlers = HandlerRegistry(order_registry())

    @handlers.handles(OrderPlaced)
    async def charge(event: OrderPlaced) -> None:
        if broken:
            raise ConnectionError("card processor unreachable")
        handled.append(event.aggregate_id)

    bus = KafkaEventBus(config, handlers.events, retry=RetryPolicy(
        max_attempts=2, initial_delay=0.05, max_delay=0.1, jitter=False))
    bus.subscribe(topic, handlers)
    order = unique("o")
    async with console_stack(bootstrap, with_sample=True) as stack:
        await bus.start()
        try:
            await bus.publish(topic, placed(order))
            await eventually(lambda: dlq.list_dead_letters(config, topic), timeout=30,
                             interval=0.2)
            page = await browser.new_page()
            problems = watch(page, stack.url)
            await page.goto(f"{stack.url}/console")
            assert page.url == f"{stack.url}/console/login"
            await page.fill("input[name=email]", ADMIN)
            await page.fill("input[name=password]", PASSWORD)
            await page.click("button[type=submit]")
            await page.wait_for_url(f"{stack.url}/console/dead-letters")
            await shoot(page, "dead-letters")
            await page.click(f"a:text-is('{topic}')")
            row = page.locator("tr", has_text=order)
            await row.wait_for()
            assert "card processor unreachable" in await row.inner_text()
            await shoot(page, "dead-letters-topic")

            broken = False  # the cause is fixed: now replay
            asked: list[str] = []

            async def confirm(dialog: Dialog) -> None:
                asked.append(dialog.message)
                await dialog.accept()

            page.on("dialog", confirm)
            started = time.monotonic()
            await row.locator("button", has_text="Replay").click()
            await row.locator(".replayed", has_text=f"replayed by {ADMIN}").wait_for()
            assert asked and topic in asked[0]
            await eventually(lambda: handled == [order], timeout=30, interval=0.1)
            await shoot(page, "dead-letters-replayed")
            print(f"replayed and handled in {time.monotonic() - started:.2f}s")

            await page.reload()  # the replay is recorded (gateway.events) and shown with who
            await page.locator("tr", has_text=order).locator(
                ".replayed", has_text=f"replayed by {ADMIN}").wait_for()
            for name in ("services", "topics", "edge", "sagas", f"sagas/order/{SAGA}"):
                await page.goto(f"{stack.url}/console/{name}")
                await page.locator("h1").first.wait_for()
                await shoot(page, name.split("/")[0] + ("-one" if "/" in name else ""))
                if name == "edge":  # login went to auth through the client: its breaker
                    assert await page.locator("td", has_text="auth").count() > 0
            await page.click("button:text('Retry (compensate again)')")  # the saga's page
            await page.locator(".replayed", has_text=f"retried by {ADMIN}").wait_for()

            parked = await park(stack, order, "UNKNOWN_TOPIC_OR_PART: widget.events")
            await page.goto(f"{stack.url}/console/outbox")
            outbox_row = page.locator("tr", has=page.locator(f"td:text-is('{parked}')"))
            await shoot(page, "outbox")
            await outbox_row.locator("button", has_text="Requeue").click()
            await outbox_row.locator(".replayed", has_text=f"requeued by {ADMIN}").wait_for()
            assert len(asked) == 3, asked  # replay, retry, requeue: each confirmed first
            await page.goto(f"{stack.url}/console/topics")
            topic_row = page.locator("tr", has=page.locator(f"td:text-is('{topic}')"))
            assert config.consumer_group in await topic_row.inner_text()  # its lag is shown
            await page.click("button:text('Log out')")
            await page.wait_for_url(f"{stack.url}/console/login")
            await page.close()
            assert problems == [], problems
        finally:
            await bus.stop()


async def shoot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"console-{name}.png"), full_page=True)
