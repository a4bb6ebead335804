"""Persistence: SQLAlchemy models, engine and session factory, bulk writes, the capture and
integrity DDL. May import domain and config only; the layers above import it."""
