"""Live push: read models of the state and the Socket.IO rooms that carry them."""
