"""The one error contract: every endpoint answers {"error", "fields"?, ...context}, rendered in one place."""

from __future__ import annotations

from typing import Any

import pytest

from dashboard.web.errors import Invalid, whole_number

UUID = "0f0e0d0c-0000-4000-8000-000000000000"


@pytest.mark.integration
def test_unknown_api_path_and_wrong_method_answer_in_the_contract_shape(app: Any) -> None:
    """Werkzeug's 404 and 405 on the API are JSON a script can read, with the Allow header kept."""
    client = app.test_client()
    missing = client.get("/api/nope")
    assert (missing.status_code, missing.get_json()) == (404, {"error": "no such endpoint: /api/nope"})
    wrong = client.get("/api/launch")
    assert wrong.status_code == 405
    assert wrong.get_json() == {"error": "GET is not allowed on /api/launch"}
    assert "POST" in wrong.headers["Allow"]


@pytest.mark.integration
def test_a_page_that_does_not_exist_stays_a_page_for_a_browser(app: Any) -> None:
    """Outside the API, a browser gets Flask's HTML page, not JSON."""
    resp = app.test_client().get("/nope", headers={"Accept": "text/html"})
    assert resp.status_code == 404 and resp.mimetype == "text/html"


@pytest.mark.integration
def test_a_task_never_seen_reads_the_same_everywhere(app: Any) -> None:
    """Detail, workflow, a long field, re-run plan, re-run and revoke: one 404 sentence for an unknown task."""
    client = app.test_client()
    expected = {"error": f"task {UUID} has not been seen (or was evicted)"}
    answers = [
        client.get(f"/api/tasks/{UUID}"),
        client.get(f"/api/tasks/{UUID}/workflow"),
        client.get(f"/api/tasks/{UUID}/fields/args"),
        client.get(f"/api/tasks/{UUID}/rerun"),
        client.post(f"/api/tasks/{UUID}/rerun", json={}),
        client.post(f"/api/tasks/{UUID}/revoke", json={}),
    ]
    assert [(r.status_code, r.get_json()) for r in answers] == [(404, expected)] * len(answers)


@pytest.mark.integration
def test_a_bad_query_parameter_is_named_under_fields(app: Any) -> None:
    """A list query with a wrong limit says which parameter and why, in `error` and under `fields`."""
    client = app.test_client()
    for path in ("/api/tasks?limit=0", "/api/failures?limit=x", "/api/audit?limit=5000"):
        body = client.get(path).get_json()
        assert body["fields"] == {"limit": body["error"]} and "whole number" in body["error"], path


@pytest.mark.integration
def test_a_worker_never_seen_is_a_404_for_its_page_and_its_controls(app: Any) -> None:
    """The worker API and its control endpoint answer the same sentence."""
    client = app.test_client()
    expected = {"error": "worker w9@nowhere has not been seen"}
    got = client.get("/api/workers/w9@nowhere")
    control = client.post("/api/workers/w9@nowhere/control", json={"action": "ping"})
    assert [(got.status_code, got.get_json()), (control.status_code, control.get_json())] == [(404, expected)] * 2


@pytest.mark.unit
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("7", 7),
        (7, 7),
        (7.0, 7),
        ("0", None),
        ("²", None),
        (True, None),
        ("", None),
        ("1e3", None),
        (12, None),
        (None, None),
    ],
)
def test_whole_number_takes_query_text_and_json_numbers_within_bounds(raw: Any, expected: int | None) -> None:
    """Decimal text or a JSON whole number in range; anything else names the parameter."""
    if expected is None:
        with pytest.raises(Invalid) as caught:
            whole_number(raw, "limit", 1, 10)
        assert caught.value.fields == {"limit": "limit must be a whole number from 1 to 10"}
    else:
        assert whole_number(raw, "limit", 1, 10) == expected


@pytest.mark.unit
@pytest.mark.parametrize(
    ("raw", "integer", "expected"),
    [
        ("7", True, 7),
        (" 7 ", True, 7),
        (7.0, True, 7),
        (7.5, True, None),
        ("1_000", True, None),
        ("+5", True, None),
        ("nan", False, None),
        (float("inf"), False, None),
        ("2.5", False, 2.5),
        (False, False, None),
        ([], True, None),
    ],
)
def test_numbers_from_outside_are_parsed_one_way(raw: Any, integer: bool, expected: float | None) -> None:
    """Query text, form text and JSON numbers: finite, booleans refused, whole only when asked."""
    from dashboard.core.numbers import number

    assert number(raw, integer) == expected
