"""Reading a live `/metrics` in tests."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


def value(text: str, name: str, **labels: str) -> float | None:
    """The sum of `name`'s samples whose labels include `labels`; None when there is none."""
    found = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                found = (found or 0.0) + sample.value
    return found


async def scrape(base_url: str) -> str:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200, response.text
    return response.text


async def metric(base_url: str, name: str, **labels: str) -> float:
    """`value` on a fresh scrape, 0 when absent (a counter not yet counted)."""
    return value(await scrape(base_url), name, **labels) or 0.0
