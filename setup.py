"""Package layout: the shared library lives in libs/lineguard, the services in
services/<name>, installed together as `lineguard` and `lineguard.services.<name>`.
pyproject.toml holds everything else; this file only maps the two folders,
which pyproject's static package discovery cannot do."""

from setuptools import find_packages, setup

library = find_packages("libs", include=["lineguard", "lineguard.*"])
services = ["lineguard.services"] + [
    f"lineguard.services.{name}" for name in find_packages("services")
]

setup(
    packages=library + services,
    package_dir={"": "libs", "lineguard.services": "services"},
)
