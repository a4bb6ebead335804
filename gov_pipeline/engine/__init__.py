"""Matching, execution and continuation of workflows (and manual runs, dry runs, failures)
over a caller-owned session: they flush, never commit. May import services, db, domain and
config; actions/ are its plug-ins, which never import the rest of engine/."""
