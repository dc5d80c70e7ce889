"""Lifecycle phases a victim walks, in order."""

PHASES = ("at-rest", "in-use", "released")
