"""Matching messages in CLI output: rich wraps lines at the terminal's width, anywhere in a long path."""


def unwrapped(text: str) -> str:
    """`text` without any whitespace, so a message matches however the console wrapped it."""
    return "".join(text.split())
