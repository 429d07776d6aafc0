"""Alembic migrations of the MES database (a package so a wheel carries them)."""
