"""Test helpers for Ferry: process management for Ferry and reference peers.

`peers` has no pytest dependency so that benchmarks/ can reuse it.
"""
