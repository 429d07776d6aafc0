"""`lineguard data ...`: datasets for training and evaluation."""

from __future__ import annotations

import typer

data_app = typer.Typer(no_args_is_help=True, help="Datasets: import (DeepPCB, YOLO folders, COCO JSON) and statistics.")
