"""`lineguard model ...`: the model lifecycle, train -> export -> evaluate -> deploy."""

from __future__ import annotations

import typer

model_app = typer.Typer(no_args_is_help=True,
                        help="Models: train, export, predict, evaluate, and the registry (push, list, promote).")
