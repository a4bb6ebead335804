"""The `gov-pipeline` command line: `app.py` holds the root group and `main`, `context.py`
what every command shares, one module per command group. May import everything below it
(embedded, orchestration, runners, engine, services, checks, coordinator, db, domain, config).
"""

from gov_pipeline.cli.app import main

__all__ = ["main"]
