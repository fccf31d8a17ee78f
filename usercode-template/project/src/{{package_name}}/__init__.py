"""{{ description }}."""
