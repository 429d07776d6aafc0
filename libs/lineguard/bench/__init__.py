"""What this box sustains: the bare model's rate and the whole line's against it (`lineguard bench`,
benchmarks/line.py). Measurement code a user runs, so it lives in the library, not in lineguard.testing."""
