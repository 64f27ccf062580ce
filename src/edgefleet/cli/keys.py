"""`edgefleet keys`: Ed25519 signing keys and the trust folders agents check them against."""

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
      edgefleet keys trust ci.pub --dir /etc/edgefleet/trusted
      edgefleet keys revoke 5d0c6a1e8b2f4d37 --dir /etc/edgefleet/trusted --reason "laptop lost"
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


def _trust_folder(folder: Path) -> None:
    if not folder.is_dir():  # TrustStore reads a missing folder as an empty one
        raise click.ClickException(f"{folder} does not exist; give the folder that holds the .pub keys "
                                   "(an agent's trust_dir, or the --dir of edgefleet keys generate)")


@keys.command("list")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path), default=Path("keys"))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def keys_list(folder: Path, as_json: bool) -> None:
    """The public keys in FOLDER (an agent's trust folder, for example), their ids and whether
    FOLDER/revoked.txt revokes them.

    \b
    Example:
      edgefleet keys list /etc/edgefleet/trusted
    """
    need("device", "nacl")
    from edgefleet.protocol.signing import SignatureError, TrustStore

    _trust_folder(folder)
    try:
        store = TrustStore.from_folder(folder)
    except SignatureError as exc:
        raise click.ClickException(str(exc)) from None
    rows = [{"key_id": kid, "file": str(store.files.get(kid, "")) or None, "revoked": store.revoked.get(kid)}
            for kid in sorted(set(store.keys) | set(store.revoked))]
    if as_json:
        accepted = sorted(set(store.keys) - set(store.revoked))
        emit_json({"folder": str(folder), "key_ids": accepted, "keys": rows})
    elif not rows:
        click.echo(f"no public keys in {folder}")
    else:
        for row in rows:
            state = f"revoked: {row['revoked']}" if row["revoked"] else "trusted"
            click.echo(f"{row['key_id']}  {state:<10}  {row['file'] or '(no .pub file)'}")


@keys.command("trust")
@click.argument("public_key", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="The trust folder (an agent's trust_dir).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def keys_trust(public_key: Path, folder: Path, as_json: bool) -> None:
    """Add PUBLIC_KEY (a .pub file) to a trust folder, as <key id>.pub. Agents read the folder
    on every check: no restart.

    \b
    Example:
      edgefleet keys trust ci-signing.pub --dir /etc/edgefleet/trusted
    """
    need("device", "nacl")
    from edgefleet.protocol.signing import SignatureError, trust_key

    try:
        kid, path, added = trust_key(public_key, folder)
    except (SignatureError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot write into {folder}: {exc.strerror or exc}") from None
    if as_json:
        emit_json({"key_id": kid, "file": str(path), "added": added})
    else:
        click.echo(f"key {kid} {'trusted' if added else 'was trusted already'}: {path}")


@keys.command("revoke")
@click.argument("key_id")
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="The trust folder (an agent's trust_dir).")
@click.option("--reason", default="revoked by the operator", show_default=True,
              help="Why: shown wherever the key's signatures are refused.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def keys_revoke(key_id: str, folder: Path, reason: str, as_json: bool) -> None:
    """Revoke KEY_ID in a trust folder (listed in its revoked.txt; its .pub stays, for the
    record). Agents refuse its signatures at once and report an active bundle it signed.

    \b
    Example:
      edgefleet keys revoke 5d0c6a1e8b2f4d37 --dir /etc/edgefleet/trusted --reason "laptop lost"
    """
    need("device", "nacl")
    from edgefleet.protocol.signing import SignatureError, revoke_key

    _trust_folder(folder)
    try:
        path, added = revoke_key(folder, key_id, reason)
    except (SignatureError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot write {folder}: {exc.strerror or exc}") from None
    if as_json:
        emit_json({"key_id": key_id, "revocation_list": str(path), "added": added, "reason": reason})
    else:
        click.echo(f"key {key_id} {'revoked' if added else 'was revoked already'} in {path}; copy it "
                   "to every agent's trust_dir that should refuse the key")
