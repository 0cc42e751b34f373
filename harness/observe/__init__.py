"""Watching a live run: STATUS and psutil sampling, the status line."""
