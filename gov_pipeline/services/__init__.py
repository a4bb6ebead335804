"""Use cases over a Session the caller owns: they flush, never commit."""
