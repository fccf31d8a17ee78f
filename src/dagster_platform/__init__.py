"""dagster-platform: the platform team's own Python (Helm engine, policies, stack, template helpers)."""
