"""Benchmarks: every figure the project quotes comes from here (`memlab bench`)."""

from .runner import GOALS, PROFILES, Profile, run_bench

__all__ = ["GOALS", "PROFILES", "Profile", "run_bench"]
