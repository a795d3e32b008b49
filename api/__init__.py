"""The REST API (FastAPI): SPEC §4."""
