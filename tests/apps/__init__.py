"""Celery apps of the tests that are not dashboard.demo (the user's own app, as `celery -A` names it)."""
