"""Running the reports service's Alembic migrations from tests."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

REPO_ROOT = Path(__file__).resolve().parents[2]
ALEMBIC_INI = REPO_ROOT / "services" / "reports" / "alembic.ini"


def alembic_config(database_url: str) -> Config:
    """An Alembic config for the service's migrations, aimed at `database_url`."""
    config = Config(str(ALEMBIC_INI))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logger"] = False
    return config


def upgrade_head(database_url: str) -> None:
    """`alembic upgrade head`, in-process."""
    command.upgrade(alembic_config(database_url), "head")


def with_search_path(url: str, schema: str) -> str:
    """`url` with its connections' search_path set to `schema`."""
    parsed = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    return parsed.render_as_string(hide_password=False)
