"""The tagging web UI: static files plus a small server that proxies `/api/*`.

The browser talks only to this server (same origin, strict CSP); the server
balances the inference API across replicas so the UI needs no nginx.
"""
