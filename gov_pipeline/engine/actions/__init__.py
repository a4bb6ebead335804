"""The engine's action plug-ins: one module per action type, mapped to its type in
registry.py. A plug-in may import only engine/actions/base.py, services, db, domain and
config — never the engine that runs it (engine/execution.py and its siblings)."""
