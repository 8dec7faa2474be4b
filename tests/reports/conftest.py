"""Fixtures for the reports service: a migrated database per backend (SQLite file, PostgreSQL
schema), emptied after every test, and an app client bound to it.

Migrations run once per backend per session. Each PostgreSQL database gets its own schema
(`reports_test_<random>`, reached through search_path), so modules sharing the `test` database
never see these tables; the schemas are dropped at the end of the session. Tests commit for
real (the service's idempotency relies on catching IntegrityError after a commit), so instead of
a rolled-back transaction each test ends by deleting every row.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session

from services.reports.api.app import create_app
from services.reports.config import Settings
from services.reports.db.engine import make_engine, make_sessionmaker
from services.reports.db.tenants import get_or_create_tenant
from tests.reports.migrate import upgrade_head, with_search_path

INTERNAL_TOKEN = "test-internal-token-0123456789"
# Children before parents, for emptying the tables between tests.
TABLES = (
    "audit_events",
    "reviews",
    "deliveries",
    "webhook_endpoints",
    "fhir_endpoints",
    "reports",
    "jobs",
    "lesions",
    "batches",
    "api_keys",
    "users",
    "tenants",
)


class PostgresSchemas:
    """Creates uniquely named schemas on demand; drops them all at the end of the session."""

    def __init__(self) -> None:
        self._admin: Engine | None = None
        self._created: list[str] = []

    def create(self, base_url: str) -> str:
        """A new empty schema; returns a URL whose connections use it."""
        if self._admin is None:
            self._admin = create_engine(base_url)
        schema = f"reports_test_{uuid.uuid4().hex[:12]}"
        with self._admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        self._created.append(schema)
        return with_search_path(base_url, schema)

    def drop_all(self) -> None:
        if self._admin is None:
            return
        with self._admin.begin() as connection:
            for schema in self._created:
                connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        self._admin.dispose()


@pytest.fixture(scope="session")
def postgres_schemas() -> Iterator[PostgresSchemas]:
    schemas = PostgresSchemas()
    yield schemas
    schemas.drop_all()


@pytest.fixture
def fresh_postgres_url(postgres_url: str, postgres_schemas: PostgresSchemas) -> str:
    """A new, empty, unmigrated PostgreSQL schema."""
    return postgres_schemas.create(postgres_url)


@pytest.fixture(scope="session")
def _migrated(postgres_schemas: PostgresSchemas) -> Iterator[dict[str, tuple[str, Engine]]]:
    """backend -> (URL, engine) of the session's migrated database, filled on first use.

    Depends on postgres_schemas so that its engines are disposed before the schemas are dropped.
    """
    migrated: dict[str, tuple[str, Engine]] = {}
    yield migrated
    for _url, engine in migrated.values():
        engine.dispose()


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def database_url(
    request: pytest.FixtureRequest,
    _migrated: dict[str, tuple[str, Engine]],
    postgres_schemas: PostgresSchemas,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """URL of a migrated database, empty at the start of each test (both backends)."""
    backend: str = request.param
    if backend not in _migrated:
        if backend == "postgres":
            base_url = request.getfixturevalue("postgres_url")
            url = postgres_schemas.create(base_url)
        else:
            url = f"sqlite:///{tmp_path_factory.mktemp('reports-db') / 'reports.db'}"
        upgrade_head(url)
        _migrated[backend] = (url, make_engine(url))
    elif backend == "postgres":
        request.getfixturevalue("postgres_url")  # still honour skip/fail when the server goes
    url, engine = _migrated[backend]
    yield url
    with engine.begin() as connection:
        for table in TABLES:
            connection.execute(text(f"DELETE FROM {table}"))


@pytest.fixture
def db(database_url: str, _migrated: dict[str, tuple[str, Engine]]) -> Iterator[Session]:
    """A session on the test database, for arranging and checking rows directly."""
    engine = next(engine for url, engine in _migrated.values() if url == database_url)
    with make_sessionmaker(engine)() as session:
        yield session


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, internal_token=SecretStr(INTERNAL_TOKEN))


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The app (lifespan run), sending the internal token on every request."""
    with TestClient(create_app(settings), headers={"X-Internal-Token": INTERNAL_TOKEN}) as test_client:
        yield test_client


@pytest.fixture
def tenant(db: Session) -> str:
    """Id of a tenant named `acme`."""
    return get_or_create_tenant(db, "acme")[0].id


@pytest.fixture
def other_tenant(db: Session) -> str:
    """Id of a second tenant, `globex`."""
    return get_or_create_tenant(db, "globex")[0].id
