"""Benchmarks (not tests): each writes bench/results/<name>-<timestamp>.json and PNG plots."""
