"""Tools CI pipelines run. version_guard, scan_gate and smoke are fetched by user-code pipelines into bare
images, so they (and this package) use the standard library only."""
