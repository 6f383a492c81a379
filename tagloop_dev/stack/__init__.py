"""`tagloop up`: the local stack under supervisord (port layout and config, staged start, control)."""
