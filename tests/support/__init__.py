"""Test helpers: real servers, tiny models, fakes, schemas. Fixtures load through
``pytest_plugins`` in tests/conftest.py; bench/ imports the server launcher from here."""
