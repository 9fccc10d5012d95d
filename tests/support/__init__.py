"""Helpers shared by the tests (importable as `tests.support.*`): the repository's paths, scripts loaded as modules,
a stand-in OpenAI-compatible endpoint, the server fixtures and small synthetic raw MMRole-Data trees."""
