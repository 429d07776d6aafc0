"""`lineguard model keygen / sign`: the ed25519 keys a model card is signed with (lineguard.vision.signing)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lineguard.vision.card import card_path
from lineguard.vision.signing import generate_keypair, key_id, load_private_key, sign_card_file


def keygen(
    out: Annotated[Path, typer.Argument(help="the private key file (written 0600); the public key goes to OUT.pub")],
) -> None:
    """A new signing key: OUT (private, keep it off the line and out of the repository) and OUT.pub (put it in the
    trusted_keys_dir of each line that should run the models it signs)."""
    try:
        private, public = generate_keypair(out)
    except FileExistsError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"private key {private} (0600), public key {public}, key id {key_id(load_private_key(private).public_key())}"
    )


def sign(
    model: Annotated[Path, typer.Argument(help="the model file (.onnx / .engine); its card beside it is signed")],
    key: Annotated[Path, typer.Option(help="the ed25519 private key (`lineguard model keygen`)")],
) -> None:
    """Sign MODEL's card (which names the file's sha256, so the signature covers the weights too)."""
    from lineguard.hashing import file_sha256
    from lineguard.vision.card import ModelCard
    from lineguard.vision.errors import ModelLoadError

    try:
        card = ModelCard.beside(model)
        if card is None:
            raise ModelLoadError(model, f"no model card {card_path(model).name} beside it")
        field = "engine_sha256" if model.suffix == ".engine" else "onnx_sha256"
        actual = file_sha256(model)
        if getattr(card, field) != actual:
            raise ModelLoadError(model, f"its card's {field} is {getattr(card, field)}, the file's sha256 is {actual}")
        written = sign_card_file(card_path(model), load_private_key(key))
    except (ModelLoadError, OSError, ValueError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"signed {written}")
