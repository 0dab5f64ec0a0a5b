"""Demo material: synthetic extracts that exercise the platform without touching real health data."""
