"""The fixtures of every server test (tests/support/serve.py): a tiny checkpoint, its backend, a running server on it,
an image folder and an `openai` client (each module gets its own)."""

from tests.support.serve import backend, client, image_folder, server, tiny  # noqa: F401  (fixtures)
