"""The query API for the MES (docs/api.md): FastAPI over the MES database, read-only, behind API tokens."""
