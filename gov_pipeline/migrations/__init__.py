"""Alembic migrations (PostgreSQL and SQLite); run with `gov-pipeline db upgrade`."""
