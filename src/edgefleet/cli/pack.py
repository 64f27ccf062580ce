"""`edgefleet pack`: ship a .tflite as it is, in a signed bundle (no conversion)."""

from __future__ import annotations

from pathlib import Path

import click

from edgefleet.cli.common import bundle_options, emit_json, need


@click.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Bundle to write (.efb); the report goes beside it (.report.json/.md).")
@click.option("--data", "data_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Inputs for the golden self-test: .npz with one array per model input (by name), "
                   "or x for a one-input model; real values, or raw tensors of a quantised input's type. "
                   "Without it, inputs are generated (the self-test then checks the runtime, not accuracy).")
@bundle_options
@click.option("--force", is_flag=True, help="Replace an existing bundle at --out (refused without it).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", is_flag=True, help="No step messages.")
def pack(model: Path, out: Path, data_path: Path | None, key: Path, unsigned: bool, name: str | None,
         version: str, target: str | None, force: bool, as_json: bool, quiet: bool) -> None:
    """Bundle MODEL (.tflite) unchanged, byte for byte, with a golden self-test set.

    For models that are ready as they are: quantised already, float16 or sparse
    weights, or a float model you do not want converted. Nothing is quantised and
    TensorFlow is not needed.

    \b
    Example:
      edgefleet pack palm_detection_lite.tflite --out palm-1.efb --data inputs.npz --name palm
    """
    need("device", "nacl", "ai_edge_litert")  # the schema reader ships with LiteRT
    from edgefleet.converter.errors import ConversionError
    from edgefleet.converter.pack import pack as run_pack
    from edgefleet.converter.pack import report_for_json, summary_text
    from edgefleet.quiet import quiet_native_output

    # LiteRT's C++ log lines ("Created TensorFlow Lite XNNPACK delegate") are not for users;
    # progress lines go past them to the real stderr
    with quiet_native_output(expected=(click.ClickException,)) as to_stderr:
        say = None if quiet or as_json else (lambda message: to_stderr(f"  {message}"))
        try:
            result = run_pack(model, out, None if unsigned else key, data_path=data_path, name=name,
                              version=version, target=target, force=force, progress=say)
        except ConversionError as exc:
            raise click.ClickException(str(exc)) from None
    if as_json:
        emit_json(report_for_json(result))
        return
    click.echo(summary_text(result))
