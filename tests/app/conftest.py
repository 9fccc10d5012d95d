"""The app tests' fixtures: a tiny checkpoint and its backend (tests/support/serve.py, one per module)."""

from tests.support.serve import backend, server, tiny  # noqa: F401  (fixtures)
