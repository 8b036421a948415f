"""Request limits: bodies over MAX_REQUEST_BYTES are a 413, JSON nested too deep is a 400 (never a 500),
and at most two exports run at once (a third is a 429 with Retry-After)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import RedisServer, csrf_token
from test_security import ACTION_BODY, BrokerWatch, rule_requests

from dashboard import create_app
from dashboard.core.jsondepth import MAX_DEPTH

pytestmark = pytest.mark.integration

DB = 10  # this module's Redis db: every key or broadcast there would be something these requests sent
DEEP = "[" * 100_000 + "]" * 100_000
DEEP_40 = "[" * 40 + "]" * 40
TOO_DEEP = "the JSON body is nested deeper than 32 levels"


def nested(levels: int, inner: Any = None) -> Any:
    """A list nested `levels` deep (the outermost list is level 1)."""
    value: Any = [] if inner is None else [inner]
    for _ in range(levels - 1):
        value = [value]
    return value


@pytest.fixture
def limited(redis_server: RedisServer) -> Iterator[Any]:
    """An app on db 10 (nothing else uses it) with a small body limit, so that limit is cheap to cross."""
    app = create_app({"INGEST_ENABLED": False, "BROKER_URL": redis_server.url_db(DB), "MAX_REQUEST_BYTES": 4096})
    app.testing = True
    yield app
    app.extensions["dashboard"].stop()


@pytest.fixture
def watch(redis_server: RedisServer) -> Iterator[BrokerWatch]:
    """What reaches db 10: queued tasks, keys, control broadcasts."""
    w = BrokerWatch(redis_server, DB)
    yield w
    w.close()


def test_every_json_endpoint_answers_deep_nesting_with_a_400(redis_server: RedisServer, watch: BrokerWatch) -> None:
    """Every POST under /api/ (walked from the URL map, so endpoints added later are covered) and the launch
    form's JSON post: a 100,000-deep array (it used to be a 500) and a 40-deep one are a 400 with the reason
    in {"error"}; nothing is launched, broadcast or audited."""
    app = create_app({"INGEST_ENABLED": False, "BROKER_URL": redis_server.url_db(DB)})
    try:
        client = app.test_client()
        posts = [(url, endpoint) for _m, url, endpoint in rule_requests(app, {"POST"}) if url.startswith("/api/")]
        assert {
            "api.launch",
            "control.bulk",
            "control.worker_control",
            "control.task_type_control",
            "control.revoke",
            "control.rerun_task",
        } <= {endpoint for _url, endpoint in posts}
        token = csrf_token(client)
        for url, _endpoint in [*posts, ("/launch", "views.launch")]:
            for body in (DEEP, DEEP_40):
                resp = client.post(
                    url,
                    data=body,
                    content_type="application/json",
                    headers={"X-CSRFToken": token, "Accept": "application/json"},
                )
                assert resp.status_code == 400, (url, resp.status_code)
                assert resp.get_json() == {"error": TOO_DEEP}, url
        # The same nesting inside a valid body (a control's filters, launch args) is refused the same way.
        for url, body in (
            ("/api/bulk", {"action": "revoke", "filters": nested(40), "dry_run": False, "limit": 1}),
            ("/api/launch", {**ACTION_BODY, "args": [nested(40), 1]}),
        ):
            resp = client.post(url, json=body)
            assert (resp.status_code, resp.get_json()) == (400, {"error": TOO_DEEP}), url
        time.sleep(0.3)  # a broadcast would have arrived by now
        assert watch.snapshot() == {} and watch.messages == []
        assert client.get("/api/audit").get_json() == {"entries": []}
    finally:
        app.extensions["dashboard"].stop()


def test_nesting_up_to_the_limit_is_accepted(redis_server: RedisServer, watch: BrokerWatch) -> None:
    """32 levels in all is a body like any other (launched); 33 is refused."""
    app = create_app({"INGEST_ENABLED": False, "BROKER_URL": redis_server.url_db(DB)})
    try:
        client = app.test_client()
        # The body object is level 1 and args level 2: args [[...], 1] with the list MAX_DEPTH - 2 deep.
        at_limit = {"unregistered_ok": True, "task": "dashboard.demo.add", "args": [nested(MAX_DEPTH - 2), 1]}
        resp = client.post("/api/launch", json=at_limit)
        assert resp.status_code == 200, resp.get_json()
        over = {"task": "dashboard.demo.add", "args": [nested(MAX_DEPTH - 1), 1]}
        assert client.post("/api/launch", json=over).get_json() == {"error": TOO_DEEP}
        assert watch.snapshot().get("celery") == 1
    finally:
        app.extensions["dashboard"].stop()


@pytest.mark.parametrize("levels", [40, 50_000])
def test_deep_json_in_a_launch_field_is_a_field_error(limited: Any, watch: BrokerWatch, levels: int) -> None:
    """args typed into the form (a JSON string) nested too deep: the field says so, nothing is sent. 50,000
    levels is 100,000 characters, the field's own limit (it used to be a 500)."""
    client = limited.test_client()
    limited.config["MAX_CONTENT_LENGTH"] = 1 << 20  # this test is about depth, not size
    text = "[" * levels + "]" * levels
    api = client.post("/api/launch", json={"unregistered_ok": True, "task": "dashboard.demo.add", "args": text})
    assert api.status_code == 400
    assert api.get_json()["fields"] == {"args": f"nested too deeply: at most {MAX_DEPTH} levels"}
    form = client.post("/launch", data={"csrf_token": csrf_token(client), "task": "dashboard.demo.add", "args": text})
    assert form.status_code == 400 and f"nested too deeply: at most {MAX_DEPTH} levels" in form.get_data(as_text=True)
    assert watch.snapshot() == {}


def test_an_oversized_body_is_a_413_that_says_why(limited: Any, watch: BrokerWatch) -> None:
    """Over MAX_REQUEST_BYTES (4096 here): JSON on the API gets {"error"}, a form post a plain-text sentence;
    under it, the same request is served. Nothing is launched."""
    client = limited.test_client()
    message = "the request body is too large: at most 4096 bytes is accepted (DASHBOARD_MAX_REQUEST_BYTES)"
    big = {"task": "dashboard.demo.add", "args": [1, 2], "kwargs": {}, "note": "x" * 5000}
    api = client.post("/api/launch", json=big)
    assert (api.status_code, api.get_json()) == (413, {"error": message})
    control = client.post("/api/bulk", json={"action": "revoke", "filters": {"q": "x" * 5000}})
    assert (control.status_code, control.get_json()) == (413, {"error": message})
    form = client.post(
        "/launch",
        data={
            "csrf_token": csrf_token(client),
            "task": "dashboard.demo.add",
            "args": "[1, 2]",
            "kwargs": json.dumps({"pad": "x" * 5000}),
        },
    )
    assert form.status_code == 413 and form.mimetype == "text/plain"
    assert form.get_data(as_text=True) == message[0].upper() + message[1:] + ".\n"
    assert watch.snapshot() == {}
    small = client.post("/api/launch", json={"unregistered_ok": True, "task": "dashboard.demo.add", "args": [1, 2]})
    assert small.status_code == 200 and watch.snapshot().get("celery") == 1


def test_the_default_body_limit_is_one_mib(app: Any) -> None:
    """Without configuration: 1 MiB of JSON is read, a byte more is a 413 naming the limit."""
    client = app.test_client()
    padding = 1 << 20
    fits = json.dumps({"filters": {"q": ""}, "pad": ""})
    body = fits.replace('"pad": ""', '"pad": "' + "x" * (padding - len(fits)) + '"')
    assert len(body) == padding
    assert client.post("/api/bulk", data=body, content_type="application/json").status_code == 400  # read: no action
    resp = client.post("/api/bulk", data=body + " ", content_type="application/json")
    assert resp.status_code == 413 and "at most 1 MiB" in resp.get_json()["error"]


def test_a_form_field_under_the_body_limit_is_read(app: Any) -> None:
    """A 600 kB multipart form field in a body under 1 MiB is read (werkzeug's own 500 kB limit on a multipart
    field is lifted to the body's): the launch form answers with its field error, not a misleading 413."""
    client = app.test_client()
    resp = client.post(
        "/launch",
        content_type="multipart/form-data",
        data={"csrf_token": csrf_token(client), "task": "dashboard.demo.add", "args": "[" + "1," * 300_000 + "1]"},
    )
    assert resp.status_code == 400 and "too long (at most 100000 characters)" in resp.get_data(as_text=True)


def test_a_third_concurrent_export_is_told_to_retry(app: Any) -> None:
    """Two exports hold the two slots (held here through the app's own object, no racing threads): the third
    gets 429 with Retry-After; once a slot frees up exports run again, and each gives its slot back."""
    client = app.test_client()
    slots = app.extensions["dashboard_exports"]
    assert slots.try_acquire() and slots.try_acquire()
    try:
        for fmt in ("csv", "json"):
            resp = client.get(f"/api/tasks/export?format={fmt}")
            assert resp.status_code == 429
            assert resp.headers["Retry-After"] == "2"
            assert resp.get_json() == {"error": "2 exports are already running; try again in a few seconds"}
    finally:
        slots.release()
    for _ in range(3):  # one slot free: exports run one after the other
        assert client.get("/api/tasks/export?format=csv").status_code == 200
    slots.release()
    assert client.get("/api/tasks/export?format=json").status_code == 200
    assert client.get("/api/tasks/export?format=xml").status_code == 400  # refused before taking a slot
    assert slots.try_acquire() and slots.try_acquire(), "an export kept its slot"
    slots.release()
    slots.release()


def test_the_real_server_answers_oversized_and_deep_bodies_and_carries_on(
    redis_server: RedisServer, watch: BrokerWatch
) -> None:
    """Through gunicorn, as a user runs it: 2 MiB of JSON is a 413 and a 100,000-deep array a 400, both with
    the reason; nothing is launched and the server keeps serving."""
    import requests
    from conftest import DashboardServer

    server = DashboardServer(redis_server.url_db(DB))
    try:
        url = server.base_url + "/api/launch"
        big = json.dumps({"task": "dashboard.demo.add", "args": [1, 2], "pad": "x" * (2 << 20)})
        resp = requests.post(url, data=big, headers={"Content-Type": "application/json"}, timeout=30)
        assert resp.status_code == 413 and "at most 1 MiB" in resp.json()["error"]
        resp = requests.post(url, data=DEEP, headers={"Content-Type": "application/json"}, timeout=30)
        assert (resp.status_code, resp.json()) == (400, {"error": TOO_DEEP})
        assert server.health()["broker"]["connected"]
        # At start the dashboard asks the workers what is in flight (ingest/seed.py): kombu's reply bindings
        # of that inspect are the server's own, not something these requests sent.
        own = {"_kombu.binding.reply.celery.pidbox", "_kombu.binding_deadlines"}
        assert {k: v for k, v in watch.snapshot().items() if k not in own} == {}
    finally:
        server.stop()
