"""The inference API: Flask behind gunicorn, hot model reloads, feedback publishing."""
