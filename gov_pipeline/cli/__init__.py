"""The `gov-pipeline` command line."""

from gov_pipeline.cli.app import main

__all__ = ["main"]
