"""Persistence: SQLAlchemy models, engine and session factory, change capture DDL."""
