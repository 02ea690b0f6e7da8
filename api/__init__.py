"""The REST API (FastAPI): reads only read models; writes are commands."""
