"""Sensors: what starts runs when the outside world changes."""
