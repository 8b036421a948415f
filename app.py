"""`python app.py [run flags]` starts the dashboard as `celery-dashboard run` does (gevent server).

`app` is a WSGI app for a server of your choice; such a server serves threads, so it is built in
threading mode (each websocket holds one thread: `gunicorn -k gthread --threads 64 app:app`).
"""

import sys

if __name__ == "__main__":
    from dashboard.cli import main

    sys.exit(main(["run", *sys.argv[1:]]))
else:
    from dashboard import create_app

    app = create_app({"ASYNC_MODE": "threading"})
