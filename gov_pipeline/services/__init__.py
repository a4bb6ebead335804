"""Use cases over a Session the caller owns: they flush, never commit (no `begin()`, no
sessionmaker). May import db, domain and config."""
