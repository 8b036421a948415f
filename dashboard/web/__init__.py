"""HTTP: pages, the JSON API, security, limits, metrics and the server."""
