"""The surfaces of longvec: REST app, CLI and the evaluation suite."""
