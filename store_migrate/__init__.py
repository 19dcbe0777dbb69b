"""store-migrate: backfill, verify and roll back the service's JSON store files."""

__version__ = "0.1.0"
