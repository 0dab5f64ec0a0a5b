"""The demo (``hdh-demo``): the whole platform on a synthetic SNDS, without touching real health data."""
