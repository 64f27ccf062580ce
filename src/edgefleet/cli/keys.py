"""`edgefleet keys`: Ed25519 signing keys for bundles."""

from __future__ import annotations

from pathlib import Path

import click

from edgefleet.cli.common import emit_json, need


def _plain_name(value: str) -> str:
    if not value or value.startswith(".") or not all(c.isalnum() or c in "._-" for c in value):
        raise click.BadParameter("use letters, digits, '.', '_' or '-' (no path, not starting with '.')")
    return value


@click.group()
def keys() -> None:
    """Ed25519 signing keys for bundles.

    \b
    Examples:
      edgefleet keys generate --dir keys
      edgefleet keys list /etc/edgefleet/trusted
    """


@keys.command("generate")
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path),
              default=Path("keys"), show_default=True, help="Folder for the key pair.")
@click.option("--name", default="signing", show_default=True, help="File name stem of the pair.",
              callback=lambda ctx, param, value: _plain_name(value))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def keys_generate(folder: Path, name: str, as_json: bool) -> None:
    """Write NAME.key (private, keep it secret) and NAME.pub (copy to each agent's trust folder).

    \b
    Example:
      edgefleet keys generate --dir keys --name signing
    """
    need("device", "nacl")
    from edgefleet.protocol.signing import SigningKey, generate_keypair

    blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:  # mkdir would fail half-way with a bare OSError
        raise click.ClickException(f"cannot create the key folder {folder}: {blocker} is not a folder "
                                   "(it is a file); choose another --dir")
    try:
        private, public = generate_keypair(folder, name)
    except FileExistsError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:  # read-only file system, no permission, disk full
        raise click.ClickException(f"cannot write the key pair into {folder}: {exc.strerror or exc}; "
                                   "choose another --dir") from None
    kid = SigningKey.load(private).key_id
    if as_json:
        emit_json({"private_key": str(private), "public_key": str(public), "key_id": kid})
    else:
        click.echo(f"private key {private} (mode 0600, keep it secret)\npublic key  {public}\n"
                   f"key id      {kid}\nCopy {public} into the trust_dir of every agent.")


@keys.command("list")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path), default=Path("keys"))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def keys_list(folder: Path, as_json: bool) -> None:
    """The public keys in FOLDER (an agent's trust folder, for example) and their ids.

    \b
    Example:
      edgefleet keys list /etc/edgefleet/trusted
    """
    need("device", "nacl")
    from edgefleet.protocol.signing import SignatureError, TrustStore

    if not folder.is_dir():  # TrustStore reads a missing folder as an empty one
        raise click.ClickException(f"{folder} does not exist; give the folder that holds the .pub keys "
                                   "(an agent's trust_dir, or the --dir of edgefleet keys generate)")
    try:
        store = TrustStore.from_folder(folder)
    except SignatureError as exc:
        raise click.ClickException(str(exc)) from None
    ids = sorted(store.keys)
    if as_json:
        emit_json({"folder": str(folder), "key_ids": ids})
    else:
        click.echo("\n".join(ids) if ids else f"no public keys in {folder}")
