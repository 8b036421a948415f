"""Celery as a client: control broadcasts, the inspector cache, launches, the audit log."""
