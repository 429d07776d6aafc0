"""The query API's token roles: one list for the tokens table's check, the results service's admin commands and the
`lineguard api token` CLI (which may not import the service)."""

from __future__ import annotations

from enum import StrEnum


class ApiRole(StrEnum):
    reader = "reader"  # the MES's queries
    quality = "quality"  # also confirms verdicts
    admin = "admin"  # also the admin routes


ROLE_HELP = "reader: the MES's queries; quality: also confirms verdicts; admin: also the admin routes"
