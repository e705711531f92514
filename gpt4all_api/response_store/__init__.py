"""Stored responses of ``/v1/responses``: a real database through SQLAlchemy.

SQLite (a file under DATA_DIR) by default, so stored responses survive restarts; a
PostgreSQL DATABASE_URL lets several API replicas share one store. ``ResponseStore`` is
the whole interface; the service layer never writes SQL.
"""

from gpt4all_api.response_store.bounded import StoreTimeout
from gpt4all_api.response_store.store import (
    InputItemPage,
    InvalidCursor,
    ResponseNotStored,
    ResponseStore,
    StoredResponse,
    database_url,
    first_line,
)

__all__ = [
    "InputItemPage",
    "InvalidCursor",
    "ResponseNotStored",
    "ResponseStore",
    "StoreTimeout",
    "StoredResponse",
    "database_url",
    "first_line",
]
