"""`lineguard model ...`: the model lifecycle, train -> export -> evaluate -> deploy."""

from __future__ import annotations

import typer

from lineguard.cli import model_registry, model_shadow, model_sign
from lineguard.cli.model_eval import eval_model, predict
from lineguard.cli.model_train import export, train

model_app = typer.Typer(
    no_args_is_help=True,
    help="Models: train, export, predict, evaluate, the registry (push, list, promote, rollback) and shadow mode.",
)

model_app.command("predict")(predict)
model_app.command("eval")(eval_model)
model_app.command("train")(train)
model_app.command("export")(export)
model_app.command("push")(model_registry.push)
model_app.command("list")(model_registry.list_models)
model_app.command("promote")(model_registry.promote)
model_app.command("rollback")(model_shadow.rollback)
model_app.add_typer(model_shadow.shadow_app, name="shadow")
model_app.command("keygen")(model_sign.keygen)
model_app.command("sign")(model_sign.sign)
