"""`/docs` in a real headless browser (Debian's chromium driven by Playwright): at a service
and at the gateway, Swagger UI renders the operations with no console error and no failed
or outside request, i.e. it works on a machine without internet access. Screenshots go to
reports/browser/ (CI keeps them)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

import pytest
from playwright.async_api import Browser, async_playwright
from playwright.async_api import TimeoutError as PlaywrightTimeout

from devinfra.process import free_port
from tests.helpers.waiting import answers_ok, eventually
from tests.processes import ROOT, Spawner

CHROMIUM = "/usr/bin/chromium"  # scripts/bootstrap.sh installs it; never `playwright install`
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOTS = ROOT / "reports" / "browser"


@pytest.fixture(scope="module")
async def stack(module_spawn: Spawner) -> dict[str, str]:
    """The sample service and a gateway in front of it (tests.integration.procs.docs_stack)."""
    ports = {"service": free_port(), "gateway": free_port()}
    proc = module_spawn("tests.integration.procs.docs_stack", str(ports["service"]),
                        str(ports["gateway"]))
    bases = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}

    async def up(base: str) -> bool:
        assert proc.poll() is None, f"docs_stack exited with {proc.returncode}"
        return await answers_ok(f"{base}/docs")

    for base in bases.values():
        await eventually(partial(up, base), timeout=30, interval=0.1)
    return bases


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        await launched.close()


@pytest.mark.parametrize(("where", "operation"), [
    ("service", "/widgets"), ("gateway", "/api/widgets")])
async def test_docs_render_the_operations_offline(stack: dict[str, str], browser: Browser,
                                                  where: str, operation: str) -> None:
    base = stack[where]
    page = await browser.new_page()
    errors: list[str] = []
    outside: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: errors.append(f"{r.url}: {r.failure}"))
    page.on("response", lambda r: errors.append(f"{r.url}: {r.status}")
            if r.status >= 400 else None)
    page.on("request", lambda r: outside.append(r.url)
            if not r.url.startswith(base + "/") else None)
    await page.goto(f"{base}/docs", wait_until="networkidle")
    try:
        await page.wait_for_selector(".opblock", timeout=10_000)
    except PlaywrightTimeout:
        pytest.fail(f"no operation rendered at {where}: {errors} {outside}")
    paths = await page.locator(".opblock .opblock-summary-path").all_inner_texts()
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"docs-{where}.png"), full_page=True)
    await page.close()
    assert len(paths) > 3 and operation in paths, paths
    assert errors == [] and outside == [], (errors, outside)
