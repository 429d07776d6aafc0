"""The results service: every inspection written once to the MES database (docs/mes-schema.md)."""
