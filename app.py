"""WSGI entry point (Procfile: `gunicorn app:app`) and `python app.py` for a local server."""
import os

if os.environ.get("DASHBOARD_ASYNC_MODE") == "eventlet":
    import eventlet  # first, before anything imports sockets (redis, kombu, celery)

    eventlet.monkey_patch()

from dashboard import create_app  # noqa: E402

app = create_app()

if __name__ == "__main__":
    from dashboard.cli import serve_app

    serve_app(app)
