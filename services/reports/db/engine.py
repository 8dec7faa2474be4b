"""Engine and session factory: the one place that knows SQLite from PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker


def _sqlite_file(url: str) -> Path | None:
    """The database file of a file-backed SQLite URL, else None."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # SQLite leaves foreign keys off unless asked; WAL lets the CLI write while the API reads;
    # busy_timeout waits (ms) for another process's write lock instead of failing at once.
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for `url`; for SQLite, creates the file's parent folder and sets pragmas."""
    sqlite_file = _sqlite_file(url)
    is_sqlite = make_url(url).get_backend_name() == "sqlite"
    if sqlite_file is not None:
        sqlite_file.parent.mkdir(parents=True, exist_ok=True)
    if is_sqlite:
        # FastAPI runs sync routes in a thread pool; connections move between its threads.
        kwargs.setdefault("connect_args", {"check_same_thread": False})
    else:
        kwargs.setdefault("pool_pre_ping", True)
    # Statement parameters hold patient references and image bytes: keep them out of error
    # messages, and so out of every logged traceback.
    kwargs.setdefault("hide_parameters", True)
    engine = create_engine(url, **kwargs)
    if is_sqlite:
        event.listen(engine, "connect", _sqlite_on_connect)
    return engine


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit (views are built after it)."""
    return sessionmaker(bind=engine, expire_on_commit=False)
