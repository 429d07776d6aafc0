"""What `lineguard demo` simulates, shipped with the package: the simulated PLCs and the demo line's configuration.

Not test code: the demo runs it on a user's machine. Tests use it too (tests/conftest.py builds every test's line
configuration from the demo's), and lineguard.testing may import it; nothing here imports lineguard.testing."""
