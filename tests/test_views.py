"""The HTML pages and the launch form (CSRF, errors, results) on a real app whose broker is db 1."""

from __future__ import annotations

import html
import json
import re
import time
from typing import Any

import pytest
import redis
from conftest import RedisServer, csrf_token

from dashboard.cluster.launch import CATALOGUE

pytestmark = pytest.mark.integration

XSS = "<script>alert('x')</script>"


def queued_ids(client: redis.Redis) -> list[str]:
    """The task ids in the `celery` list of db 1, oldest first."""
    return [json.loads(raw)["headers"]["id"] for raw in reversed(client.lrange("celery", 0, -1))]


def field_error(page: str, field: str) -> str | None:
    """The text of a field's visible error on a rendered form, or None when it is hidden."""
    match = re.search(rf'<div class="field-error" data-field="{field}"( hidden)?>(.*?)</div>', page, re.S)
    assert match, f"no error slot for {field}"
    return None if match.group(1) else html.unescape(match.group(2))


def textarea(page: str, name: str) -> str:
    """The (unescaped) content of a textarea of the form."""
    match = re.search(rf'<textarea id="launch-{name}" name="{name}"[^>]*>(.*?)</textarea>', page, re.S)
    assert match, f"no {name} textarea"
    return html.unescape(match.group(1))


@pytest.mark.parametrize(
    "path, view, element",
    [
        ("/", "overview", 'id="counts"'),
        ("/tasks", "tasks", 'id="task-table"'),
        ("/tasks/6b1e7c52-0000-4000-8000-000000000001", "task", 'id="task-fields"'),
        ("/workers", "workers", 'id="worker-table"'),
        ("/launch", "launch", 'id="launch-form"'),
    ],
)
def test_each_page_renders(app: Any, path: str, view: str, element: str) -> None:
    """Every page is HTML with its main element, its data-view and its own script module."""
    resp = app.test_client().get(path)
    assert resp.status_code == 200
    assert resp.mimetype == "text/html"
    page = resp.get_data(as_text=True)
    assert re.search(rf'<main id="page" data-view="{view}" data-push-interval="0.05"', page)
    assert element in page
    assert f'<script type="module" src="/static/js/{view}.js"></script>' in page


def test_navigation_marks_the_current_page(app: Any) -> None:
    """The top navigation marks where the user is (a task page counts as Tasks)."""
    client = app.test_client()
    assert '<a href="/workers" aria-current="page">Workers</a>' in client.get("/workers").get_data(as_text=True)
    assert '<a href="/tasks" aria-current="page">Tasks</a>' in client.get("/tasks/abc").get_data(as_text=True)


def test_task_page_carries_its_uuid(app: Any) -> None:
    """The task page knows which task it shows, even before any event for it arrived."""
    page = app.test_client().get("/tasks/abc-123").get_data(as_text=True)
    assert 'data-uuid="abc-123"' in page
    assert 'id="task-unknown"' in page


def test_tasks_page_keeps_its_filters(app: Any) -> None:
    """/tasks?state=&name=&worker=&q= pre-fills the filters and says what the list is filtered by."""
    page = app.test_client().get("/tasks?state=FAILURE&name=demo.add&worker=w9@box&q=invoice").get_data(as_text=True)
    assert (
        'data-state-filter="FAILURE" data-name-filter="demo.add" data-worker-filter="w9@box" data-text-filter="invoice"'
    ) in page
    assert '<option value="FAILURE" selected>FAILURE</option>' in page
    assert 'value="demo.add"' in page and 'value="w9@box"' in page and 'value="invoice"' in page
    assert "worker <strong>w9@box</strong>" in page and "text containing <strong>“invoice”</strong>" in page


@pytest.mark.parametrize("path", ["/launch", "/tasks"])
def test_launch_form_has_a_csrf_token_and_every_demo_task(app: Any, path: str) -> None:
    """The launch form (own page and task list) carries a CSRF token and offers every demo task."""
    client = app.test_client()
    token = csrf_token(client, path)
    assert len(token) > 20
    page = client.get(path).get_data(as_text=True)
    for task in CATALOGUE:
        assert f'<option value="{task.name}"' in page
    assert textarea(page, "args") == "[2, 3]"  # the first task's example, ready to submit


def test_post_without_csrf_token_is_refused(app: Any, queue: redis.Redis) -> None:
    """A form post without the token is a 400 that says what happened; nothing is queued."""
    resp = app.test_client().post(
        "/launch", data={"task": "dashboard.demo.add", "args": "[2, 3]", "unregistered_ok": "1"}
    )
    assert resp.status_code == 400
    page = resp.get_data(as_text=True)
    assert field_error(page, "form") == "The CSRF token is missing. Reload the page and try again."
    assert 'id="launch-form"' in page  # the form is shown again, to retry
    assert queue.llen("celery") == 0


def test_post_with_a_forged_token_is_refused(app: Any, queue: redis.Redis) -> None:
    """A token that does not belong to the session is refused; nothing is queued."""
    client = app.test_client()
    csrf_token(client)
    resp = client.post(
        "/launch", data={"csrf_token": "forged", "task": "dashboard.demo.add", "args": "[2, 3]", "unregistered_ok": "1"}
    )
    assert resp.status_code == 400
    assert "CSRF token is invalid" in field_error(resp.get_data(as_text=True), "form")
    assert queue.llen("celery") == 0


def test_token_from_another_session_is_refused(app: Any, queue: redis.Redis) -> None:
    """A token copied into a browser without the matching session cookie is refused."""
    token = csrf_token(app.test_client())
    resp = app.test_client().post(
        "/launch", data={"csrf_token": token, "task": "dashboard.demo.add", "args": "[2, 3]", "unregistered_ok": "1"}
    )
    assert resp.status_code == 400
    assert "CSRF" in field_error(resp.get_data(as_text=True), "form")
    assert queue.llen("celery") == 0


def test_bad_json_rerenders_the_form_with_the_field_error(app: Any, queue: redis.Redis) -> None:
    """args that are not JSON: 400, the form comes back with the error under args and the input kept."""
    client = app.test_client()
    token = csrf_token(client)
    resp = client.post(
        "/launch",
        data={
            "csrf_token": token,
            "task": "dashboard.demo.send_email",
            "args": '["ada@example.com", <b>',
            "kwargs": "{}",
            "count": "2",
            "countdown": "0",
        },
    )
    assert resp.status_code == 400
    page = resp.get_data(as_text=True)
    assert field_error(page, "args").startswith("not valid JSON")
    assert field_error(page, "count") is None
    assert 'name="args" class="mono" rows="2" spellcheck="false" aria-invalid="true"' in page
    assert textarea(page, "args") == '["ada@example.com", <b>'  # kept, so the user can fix it
    assert "<b>" not in page.split('name="args"')[1].split("</textarea>")[0]  # and shown as text
    assert '<option value="dashboard.demo.send_email" selected>' in page
    assert 'value="2"' in page
    assert 'id="launch-result" aria-live="polite" hidden' in page
    assert queue.llen("celery") == 0


def test_every_bad_field_is_shown(app: Any, queue: redis.Redis) -> None:
    """Several mistakes are shown at once, each under its own field."""
    client = app.test_client()
    token = csrf_token(client)
    resp = client.post(
        "/launch",
        data={
            "csrf_token": token,
            "task": "dashboard.demo.add",
            "args": "[1, 2, 3]",
            "kwargs": "{}",
            "count": "0",
            "countdown": "soon",
        },
    )
    assert resp.status_code == 400
    page = resp.get_data(as_text=True)
    assert field_error(page, "args") == "add(x, y) takes at most 2 positional argument(s), got 3"
    assert field_error(page, "count") == "a whole number from 1 to 1000"
    assert field_error(page, "countdown") == "seconds from 0 to 86400"
    assert field_error(page, "kwargs") is None
    assert queue.llen("celery") == 0


def test_valid_form_queues_tasks_and_links_to_each(app: Any, queue: redis.Redis) -> None:
    """A valid post queues count tasks and the page links to /tasks/<id> for each of them."""
    client = app.test_client()
    token = csrf_token(client)
    resp = client.post(
        "/launch",
        data={
            "csrf_token": token,
            "task": "dashboard.demo.add",
            "args": "[2, 3]",
            "kwargs": "",
            "count": "3",
            "unregistered_ok": "1",  # no worker in these tests: confirmed (test_unregistered_* below)
            "countdown": "",
        },
    )
    assert resp.status_code == 200
    page = resp.get_data(as_text=True)
    ids = queued_ids(queue)
    assert len(ids) == 3
    linked = re.findall(r'<a class="mono" href="/tasks/([^"]+)">\1</a>', page)
    assert linked == ids
    assert "Launched 3 tasks of <code>dashboard.demo.add</code>" in page


def test_token_can_be_reused_for_several_launches(app: Any, queue: redis.Redis) -> None:
    """A page left open launches again with the same token (no time limit, no one-shot token)."""
    client = app.test_client()
    token = csrf_token(client)
    for _ in range(2):
        resp = client.post(
            "/launch",
            data={
                "csrf_token": token,
                "task": "dashboard.demo.flaky",
                "args": "[]",
                "kwargs": '{"fail_times": 0}',
                "count": "1",
                "unregistered_ok": "1",
            },
        )
        assert resp.status_code == 200
    assert queue.llen("celery") == 2


def test_json_launch_answers_task_ids(app: Any, queue: redis.Redis) -> None:
    """The page's script posts JSON with X-CSRFToken and gets {"task_ids"} back."""
    client = app.test_client()
    token = csrf_token(client)
    resp = client.post(
        "/launch",
        json={
            "unregistered_ok": True,
            "task": "dashboard.demo.add",
            "args": "[2, 3]",
            "kwargs": "{}",
            "count": "2",
        },
        headers={"Accept": "application/json", "X-CSRFToken": token},
    )
    assert resp.status_code == 200
    assert resp.get_json() == {"task_ids": queued_ids(queue), "audit_id": 1}
    assert len(resp.get_json()["task_ids"]) == 2


def test_json_launch_answers_field_errors(app: Any, queue: redis.Redis) -> None:
    """Bad input posted as JSON gets {"error", "fields": {field: message}} and a 400; nothing is queued."""
    client = app.test_client()
    token = csrf_token(client)
    resp = client.post(
        "/launch",
        json={"unregistered_ok": True, "task": "dashboard.demo.add", "args": "[2", "kwargs": '{"z": 1}'},
        headers={"Accept": "application/json", "X-CSRFToken": token},
    )
    assert resp.status_code == 400
    body = resp.get_json()
    assert set(body["fields"]) == {"args"}
    assert body["fields"]["args"].startswith("not valid JSON")
    assert "task_ids" not in body  # nothing was sent
    assert queue.llen("celery") == 0


def test_json_launch_body_must_be_an_object(app: Any, queue: redis.Redis) -> None:
    """A JSON list posted to the form endpoint is a 400 on the whole form."""
    client = app.test_client()
    token = csrf_token(client)
    resp = client.post(
        "/launch", json=["dashboard.demo.add"], headers={"Accept": "application/json", "X-CSRFToken": token}
    )
    assert resp.status_code == 400
    assert resp.get_json()["fields"] == {"form": "the body must be a JSON object"}
    assert queue.llen("celery") == 0


def test_json_launch_without_token_is_refused_as_json(app: Any, queue: redis.Redis) -> None:
    """The script gets the CSRF refusal as JSON it can show next to the form."""
    client = app.test_client()
    csrf_token(client)
    resp = client.post(
        "/launch",
        json={"unregistered_ok": True, "task": "dashboard.demo.add", "args": [2, 3]},
        headers={"Accept": "application/json"},
    )
    assert resp.status_code == 400
    body = resp.get_json()
    assert body["fields"]["form"] == "The CSRF token is missing. Reload the page and try again."
    assert queue.llen("celery") == 0


def test_form_post_answers_json_when_asked(app: Any, queue: redis.Redis) -> None:
    """A form-encoded post with Accept: application/json gets JSON (for scripts and curl)."""
    client = app.test_client()
    token = csrf_token(client)
    resp = client.post(
        "/launch",
        data={"csrf_token": token, "task": "dashboard.demo.workflow", "kwargs": '{"n": 2}', "unregistered_ok": "on"},
        headers={"Accept": "application/json"},
    )
    assert resp.status_code == 200
    assert resp.get_json() == {"task_ids": queued_ids(queue), "audit_id": 1}


def test_form_launch_is_audited_with_who_where_what_and_the_task_ids(app: Any, queue: redis.Redis) -> None:
    """A launch from the form is one audit entry (like a control action): anonymous without auth, the
    address, the task, the count, the ids queued; the page links to the entry."""
    client = app.test_client()
    token = csrf_token(client)
    resp = client.post(
        "/launch",
        data={
            "csrf_token": token,
            "task": "dashboard.demo.send_email",
            "args": '["ada@example.com", "hi"]',
            "kwargs": "",
            "count": "2",
            "unregistered_ok": "1",
        },
        environ_base={"REMOTE_ADDR": "198.51.100.4"},
    )
    assert resp.status_code == 200
    [entry] = client.get("/api/audit").get_json()["entries"]
    assert entry["action"] == "launch" and entry["target"] == "dashboard.demo.send_email" and entry["ok"] is True
    assert entry["user"] is None and entry["remote_addr"] == "198.51.100.4"
    assert entry["params"] == {
        "count": 2,
        "countdown": 0.0,
        "via": "form",
        "unregistered": True,  # sent although no online worker had it registered (confirmed)
        "task_ids": queued_ids(queue),
    }
    assert entry["message"] == "sent 2 × dashboard.demo.send_email"
    page = resp.get_data(as_text=True)
    assert f'<a class="audit-link" href="/audit#entry-{entry["id"]}">audit entry #{entry["id"]}</a>' in page


def test_refused_form_launch_is_not_sent_says_why_and_is_not_audited(app: Any, queue: redis.Redis) -> None:
    """Bad input on the form: 400 with the reason under the field, nothing queued, nothing audited."""
    client = app.test_client()
    token = csrf_token(client)
    resp = client.post("/launch", data={"csrf_token": token, "task": "dashboard.demo.add", "args": "[1]"})
    assert resp.status_code == 400
    assert field_error(resp.get_data(as_text=True), "args") == "missing required argument(s): y"
    assert queue.llen("celery") == 0
    assert client.get("/api/audit").get_json() == {"entries": []}


def test_form_launch_by_a_signed_in_user_lands_in_the_audit_file(
    redis_server: RedisServer, queue: redis.Redis, tmp_path: Any
) -> None:
    """Signed in with basic auth, the form's launch is audited under the user's name, and AUDIT_LOG gets
    the line."""
    import base64

    from dashboard import create_app

    path = tmp_path / "audit.jsonl"
    app = create_app(
        {
            "INGEST_ENABLED": False,
            "BROKER_URL": redis_server.url_db(1),
            "AUDIT_LOG": str(path),
            "AUTH_USERS": "ada:correct horse",
        }
    )
    try:
        client = app.test_client()
        ada = {"Authorization": "Basic " + base64.b64encode(b"ada:correct horse").decode()}
        token = re.search(
            r'name="csrf_token" value="([^"]+)"',  # type: ignore[union-attr]
            client.get("/launch", headers=ada).get_data(as_text=True),
        ).group(1)
        resp = client.post(
            "/launch",
            json={"unregistered_ok": True, "task": "dashboard.demo.add", "args": "[2, 3]"},
            headers={**ada, "Accept": "application/json", "X-CSRFToken": token},
        )
        assert resp.status_code == 200
        [line] = [json.loads(raw) for raw in path.read_text(encoding="utf-8").splitlines()]
        assert line["id"] == resp.get_json()["audit_id"] and line["user"] == "ada" and line["action"] == "launch"
        assert line["params"]["task_ids"] == resp.get_json()["task_ids"] == queued_ids(queue)
    finally:
        app.extensions["dashboard"].stop()


def test_markup_in_the_url_is_escaped(app: Any) -> None:
    """A uuid or filter with markup is shown as text, never run as a script."""
    client = app.test_client()
    task_page = client.get("/tasks/%22%3E%3Csvg%20onload%3Dalert(1)%3E").get_data(as_text=True)
    assert "<svg" not in task_page
    assert 'data-uuid="&#34;&gt;&lt;svg onload=alert(1)&gt;"' in task_page
    assert '<span class="mono">&#34;&gt;&lt;svg onload=alert(1)&gt;</span>' in task_page
    tasks_page = client.get("/tasks", query_string={"name": XSS, "state": XSS}).get_data(as_text=True)
    assert "<script>alert" not in tasks_page
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in tasks_page


def test_markup_in_the_form_is_escaped(app: Any, queue: redis.Redis) -> None:
    """Markup submitted in the form comes back inside the inputs as text, not as elements."""
    client = app.test_client()
    token = csrf_token(client)
    resp = client.post(
        "/launch",
        data={"csrf_token": token, "task": XSS, "args": f"</textarea>{XSS}", "count": '"><script>x()</script>'},
    )
    assert resp.status_code == 400
    page = resp.get_data(as_text=True)
    assert "<script>" not in page.replace('<script type="module"', "")
    assert textarea(page, "args") == f"</textarea>{XSS}"
    assert field_error(page, "task").startswith("choose one of")
    assert queue.llen("celery") == 0


def test_task_data_with_markup_never_appears_raw_in_pages(app: Any) -> None:
    """Task names and args with markup (from events) are never written raw into any page."""
    now = time.time()
    app.extensions["dashboard"].state.events(
        [
            {
                "type": "task-received",
                "uuid": "xss-1",
                "hostname": "w@h",
                "timestamp": now,
                "local_received": now,
                "name": XSS,
                "args": "('<img src=x onerror=alert(1)>',)",
                "kwargs": "{}",
            },
            {
                "type": "task-failed",
                "uuid": "xss-1",
                "hostname": "w@h",
                "timestamp": now + 1,
                "local_received": now,
                "exception": f"ValueError({XSS!r})",
                "traceback": XSS,
            },
        ]
    )
    client = app.test_client()
    for path in ("/", "/tasks", "/tasks/xss-1", "/workers", "/launch", "/tasks?name=script"):
        page = client.get(path).get_data(as_text=True)
        assert XSS not in page, path
        assert "onerror=alert" not in page, path
