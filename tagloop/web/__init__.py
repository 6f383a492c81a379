"""Web plumbing both services and the UI share: JSON API errors and bodies, HTTP metrics, the gunicorn runner."""
