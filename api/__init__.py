"""Surfaces: the REST app, the CLI and the evaluation harness."""
