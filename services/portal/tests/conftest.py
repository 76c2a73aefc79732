"""The portal's tests keep its session store (a SQLite file unless a test gives it PostgreSQL) in the
test's own directory."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _own_data_dir(tmp_path, monkeypatch):  # noqa: ANN001
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
