"""The suite's fixtures live in the helper package tests/support/ and load as plugins."""

import pytest

# Plain ``assert`` in the helpers reports its operands like in the tests.
pytest.register_assert_rewrite("tests.support")

pytest_plugins = [
    "tests.support.fixtures",
    "tests.support.gpu_fixtures",
    "tests.support.hardening_fixtures",
    "tests.support.postgres",
    "tests.support.redis_server",
]
