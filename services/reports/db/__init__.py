"""SQLAlchemy 2 models, engine and queries of the reports database."""
