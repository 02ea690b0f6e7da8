"""Issue 13: hostile input against the real system (one module per finding group)."""
