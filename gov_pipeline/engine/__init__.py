"""Matching, execution and continuation of workflows over a caller-owned session: they
flush, never commit. May import services, db, domain, config; actions/ are its plug-ins."""
