"""Flow 1: template answers + platform settings -> a user-code repo (copier)."""
