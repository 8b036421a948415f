"""The dashboard's Socket.IO handlers: connect (authenticated), subscribe to a view's room, disconnect."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import request
from flask_socketio import ConnectionRefusedError, Namespace

from .rooms import NAMESPACE, Rooms


class DashboardNamespace(Namespace):
    """Socket.IO events of the default namespace, handed to the rooms."""

    def __init__(self, rooms: Rooms, allowed: Callable[[Any], bool]) -> None:
        super().__init__(NAMESPACE)
        self.rooms = rooms
        self.allowed = allowed  # the web layer's credential check (auth payload -> may connect)

    def on_connect(self, auth: Any = None) -> None:
        """Refuse a websocket that is not authenticated when auth is on."""
        if not self.allowed(auth):
            raise ConnectionRefusedError("authentication required")  # flask_socketio's: the client sees why

    def on_subscribe(self, payload: Any) -> dict[str, Any]:
        """Join the room of the requested view and return its snapshot (the ack)."""
        return self.rooms.subscribe(request.sid, payload)  # type: ignore[attr-defined]

    def on_disconnect(self, *args: Any) -> None:
        """Forget the subscription of a closed socket."""
        self.rooms.leave(request.sid)  # type: ignore[attr-defined]
