"""GET /api/documents/rejections: the dropped pages and the totals per domain x reason."""

from __future__ import annotations

from aifactory.db import Database
from tests.text.test_rejections import SPAM, run, text


def test_the_rejections_api_filters_and_counts(db: Database, serve) -> None:
    run(
        db,
        text("https://spam.example/a", SPAM),
        text("https://spam.example/b", "Too short."),
        text("https://other.example/c", "Too short as well."),
    )
    client, _node = serve()
    body = client.get("/api/documents/rejections").json()
    assert [row["url"] for row in body["rejections"]] == [
        "https://other.example/c",
        "https://spam.example/b",
        "https://spam.example/a",
    ]
    assert body["total"] == 3 and {"domain", "reason", "count", "last_at"} == set(body["counts"][0])
    first = body["rejections"][-1]
    assert first["reason"] == "repeated_lines" and first["value"] > first["threshold"]
    by_reason = client.get("/api/documents/rejections", params={"reason": "too_short", "limit": 1}).json()
    assert [row["url"] for row in by_reason["rejections"]] == ["https://other.example/c"]
    assert by_reason["total"] == 2
    by_domain = client.get("/api/documents/rejections", params={"domain": "spam.example"}).json()
    assert {row["reason"]: row["count"] for row in by_domain["counts"]} == {
        "repeated_lines": 1,
        "too_short": 1,
    }
    older = client.get("/api/documents/rejections", params={"before_id": body["rejections"][1]["id"]}).json()
    assert [row["url"] for row in older["rejections"]] == ["https://spam.example/a"]
    for bad in ({"limit": 0}, {"limit": 5000}, {"reason": "DROP TABLE"}):
        response = client.get("/api/documents/rejections", params=bad)
        assert response.status_code == 422, bad
    assert "/api/documents/rejections" in client.get("/openapi.json").json()["paths"]
