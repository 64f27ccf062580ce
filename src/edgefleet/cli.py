"""The `edgefleet` command. Each sub-command imports its heavy dependencies only when
it runs, and names the extra to install when one is missing."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from edgefleet import __version__

DEFAULT_BROKER = "localhost:1883"
DEFAULT_KEY = "keys/signing.key"


def need(extra: str, *modules: str) -> None:
    """Fail with an install hint when a module of an optional extra is missing.

    find_spec looks without importing: TensorFlow alone takes seconds to import.
    """
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # a missing parent package, e.g. paho for paho.mqtt
            found = False
        if not found:
            raise click.ClickException(
                f"this command needs the '{extra}' extra ({name} is missing): "
                f"pip install 'edgefleet[{extra}]'"
            )


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


broker_option = click.option(
    "--broker", default=lambda: os.environ.get("EDGEFLEET_BROKER", DEFAULT_BROKER),
    show_default=f"$EDGEFLEET_BROKER or {DEFAULT_BROKER}", help="MQTT broker as HOST:PORT.")
prefix_option = click.option(
    "--prefix", default=lambda: os.environ.get("EDGEFLEET_PREFIX", "edgefleet"),
    show_default="$EDGEFLEET_PREFIX or edgefleet", help="Base topic of the fleet.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgefleet")
def main() -> None:
    """Convert models for edge boards, ship them over MQTT, run and watch them."""


# keys
def _plain_name(value: str) -> str:
    if not value or value.startswith(".") or not all(c.isalnum() or c in "._-" for c in value):
        raise click.BadParameter("use letters, digits, '.', '_' or '-' (no path, not starting with '.')")
    return value


@main.group()
def keys() -> None:
    """Ed25519 signing keys for bundles."""


@keys.command("generate")
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path),
              default=Path("keys"), show_default=True, help="Folder for the key pair.")
@click.option("--name", default="signing", show_default=True, help="File name stem of the pair.",
              callback=lambda ctx, param, value: _plain_name(value))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def keys_generate(folder: Path, name: str, as_json: bool) -> None:
    """Write NAME.key (private, keep it secret) and NAME.pub (copy to each agent's trust folder)."""
    need("device", "cryptography")
    from edgefleet.protocol.signing import SigningKey, generate_keypair

    try:
        private, public = generate_keypair(folder, name)
    except FileExistsError as exc:
        raise click.ClickException(str(exc)) from None
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
    """The public keys in FOLDER (an agent's trust folder, for example) and their ids."""
    need("device", "cryptography")
    from edgefleet.protocol.signing import SignatureError, TrustStore

    try:
        store = TrustStore.from_folder(folder)
    except SignatureError as exc:
        raise click.ClickException(str(exc)) from None
    ids = sorted(store.keys)
    if as_json:
        emit_json({"folder": str(folder), "key_ids": ids})
    else:
        click.echo("\n".join(ids) if ids else f"no public keys in {folder}")


# convert
@main.command()
@click.argument("model", type=click.Path(exists=True, path_type=Path))
@click.option("--calib", "calib", required=True, type=click.Path(exists=True, path_type=Path),
              help="Calibration inputs: .npz (x), .npy, or a folder of images (with --preprocess).")
@click.option("--eval", "eval_path", type=click.Path(exists=True, path_type=Path),
              help="Evaluation data: .npz with x and labels y (top-1/top-k), or without labels "
                   "(agreement with the float model, SNR, cosine).")
@click.option("--train", "train_path", type=click.Path(exists=True, path_type=Path),
              help="Training data (.npz with x, y) for the fine-tuning of pruned variants.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Bundle to write (.efb); the report goes beside it (.report.json/.md/.png).")
@click.option("--key", type=click.Path(dir_okay=False, path_type=Path), default=Path(DEFAULT_KEY),
              show_default=True, help="Private signing key (edgefleet keys generate).")
@click.option("--name", help="Model name in the manifest (default: the model file's stem).")
@click.option("--version", "version", default="1", show_default=True, help="Model version.")
@click.option("--target", help="Board profile (rpi4, rpi5, coral-usb, coral-devboard, imx8mp-npu, "
                               "generic-x86_64, generic-aarch64); default: generic for this machine.")
@click.option("--mode", help="One variant: float32, dynamic, float16 (fp16), int8, int16x8, or "
                             "pruned-<mode> (default: the target's).")
@click.option("--variants", help="Several, compared side by side, e.g. int8,fp16,dynamic,pruned-int8; "
                                 "the recommended one goes in the bundle.")
@click.option("--pick", help="Put this variant in the bundle instead of the recommended one.")
@click.option("--io-type", "io_dtype", type=click.Choice(["int8", "uint8", "float32"]),
              help="Input/output type of int8 variants (default: the target's).")
@click.option("--calibration-samples", default=200, show_default=True, type=click.IntRange(1))
@click.option("--max-accuracy-drop", type=float,
              help="Fail when the bundled variant loses more top-1 (or agreement) than this many "
                   "percentage points against the float model.")
@click.option("--keep-float-layers", type=click.Choice(["auto"]),
              help="int8: keep the worst layers (QuantizationDebugger) in float until "
                   "--max-accuracy-drop is met.")
@click.option("--sparsity", "prune_sparsity", default=0.8, show_default=True,
              type=click.FloatRange(0, 1, max_open=True), help="Target sparsity of pruned variants.")
@click.option("--prune-epochs", default=4, show_default=True, type=click.IntRange(1))
@click.option("--m-by-n", "m_by_n", help="Structured pruning, e.g. 2:4.")
@click.option("--xnnpack-policy", is_flag=True,
              help="tf-keras models: prune only what XNNPACK's sparse kernels use "
                   "(tfmot's PruneForLatencyOnXNNPack).")
@click.option("--per-tensor", is_flag=True, help="Per-tensor weight scales (default: per channel).")
@click.option("--preprocess", help="For image folders: size=96x96,scale=1/255,mean=..,std=..,"
                                   "layout=nhwc,color=rgb")
@click.option("--no-latency", is_flag=True, help="Skip the latency measurements.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", is_flag=True, help="No step messages or progress bars.")
def convert(model: Path, calib: Path, eval_path: Path | None, train_path: Path | None, out: Path,
            key: Path, name: str | None, version: str, target: str | None, mode: str | None,
            variants: str | None, pick: str | None, io_dtype: str | None, calibration_samples: int,
            max_accuracy_drop: float | None, keep_float_layers: str | None, prune_sparsity: float,
            prune_epochs: int, m_by_n: str | None, xnnpack_policy: bool, per_tensor: bool,
            preprocess: str | None, no_latency: bool, as_json: bool, quiet: bool) -> None:
    """Quantise (and optionally prune) MODEL, compare variants, pack a signed bundle.

    MODEL is a Keras 3 .keras, a tf-keras .h5, a SavedModel folder or a float .tflite.
    """
    need("converter", "tensorflow")
    from edgefleet.progress import ProgressBars
    from edgefleet.quiet import quiet_native_output

    if keep_float_layers and max_accuracy_drop is None:
        raise click.UsageError("--keep-float-layers auto needs --max-accuracy-drop")
    structure = None
    if m_by_n:
        try:
            m, n = (int(v) for v in m_by_n.split(":"))
        except ValueError:
            raise click.BadParameter("use M:N, e.g. 2:4", param_hint="--m-by-n") from None
        structure = (m, n)
    show = not (quiet or as_json)
    # TensorFlow's C++ log lines are shown only if the conversion fails unexpectedly
    with ProgressBars(show) as bars, quiet_native_output(expected=(click.ClickException,)):
        from edgefleet.converter.build import convert as run_convert
        from edgefleet.converter.errors import ConversionError

        try:
            result = run_convert(
                model, calib, out, key, progress=bars.step if show else None,
                on_progress=bars.update if show else None, eval_path=eval_path,
                train_path=train_path, name=name, version=version, target=target, mode=mode,
                variants=variants, pick=pick, io_dtype=io_dtype,
                calibration_samples=calibration_samples, max_accuracy_drop=max_accuracy_drop,
                keep_float_layers=keep_float_layers, prune_sparsity=prune_sparsity,
                prune_epochs=prune_epochs, prune_m_by_n=structure, prune_xnnpack_policy=xnnpack_policy,
                per_channel=not per_tensor, preprocess=preprocess,
                measure_latency=not no_latency)
        except ConversionError as exc:
            raise click.ClickException(str(exc)) from None
    if as_json:
        emit_json({**result.report, "bundle_path": str(result.bundle_path),
                   "bundle_size": result.bundle_size,
                   "report_paths": {k: str(v) for k, v in result.report_paths.items()}})
        return
    click.echo(_convert_summary(result))


def _convert_summary(result: Any) -> str:
    r = result.report
    lines = [f"wrote {result.bundle_path} ({result.bundle_size:,} bytes) holding {r['chosen']}; "
             f"report {', '.join(str(p) for p in result.report_paths.values())}"]
    flt = r["float"]

    def acc(metrics: dict[str, Any]) -> str:
        if metrics.get("top1") is not None:
            return f"top-1 {100 * metrics['top1']:.2f}%"
        if metrics.get("agreement") is not None:
            return f"agree {100 * metrics['agreement']:.2f}%"
        return "accuracy n/a"

    def p50(latency: dict[str, float]) -> str:
        return f"p50 {latency['1']:.3f} ms" if "1" in latency else "p50 n/a"

    lines.append(f"  {'float32':<14} {flt['size_bytes']:>10,} B  {acc(flt['metrics']):<16} "
                 f"{p50(flt['latency_p50_ms'])}")
    for v in r["variants"]:
        mark = "*" if v["name"] == r["chosen"] else " "
        lines.append(f"{mark} {v['name']:<14} {v['size_bytes']:>10,} B  {acc(v['metrics']):<16} "
                     f"{p50(v['latency_p50_ms'])}  ({v['size_ratio']:.2f}x float)")
    lines.append(f"  {r['recommendation']}")
    lines += [f"  warning: {w}" for w in r["warnings"]]
    return "\n".join(lines)


# distill
@main.command()
@click.option("--teacher", required=True, type=click.Path(exists=True, path_type=Path),
              help="The trained teacher (Keras 3 .keras).")
@click.option("--student", "student_path", type=click.Path(exists=True, path_type=Path),
              help="A student architecture (.keras; its weights are reset).")
@click.option("--width", type=click.FloatRange(0, 1, min_open=True),
              help="Or: the teacher's architecture with every layer's width scaled by this.")
@click.option("--train", "train_path", required=True, type=click.Path(exists=True, path_type=Path),
              help="Training data: .npz with x and labels y.")
@click.option("--eval", "eval_path", type=click.Path(exists=True, path_type=Path),
              help="Evaluation data (.npz with x, y) for the comparison.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to save the distilled student (.keras).")
@click.option("--temperature", default=4.0, show_default=True, type=click.FloatRange(0, min_open=True))
@click.option("--alpha", default=0.1, show_default=True, type=click.FloatRange(0, 1),
              help="Weight of the hard-label loss (1 - alpha on the teacher's soft targets).")
@click.option("--epochs", default=30, show_default=True, type=click.IntRange(1))
@click.option("--learning-rate", default=1e-3, show_default=True, type=click.FloatRange(0, min_open=True),
              help="Adam's starting rate (cosine decay to 0).")
@click.option("--no-baseline", is_flag=True, help="Skip training the student on labels alone.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def distill(teacher: Path, student_path: Path | None, width: float | None, train_path: Path,
            eval_path: Path | None, out: Path, temperature: float, alpha: float, epochs: int,
            learning_rate: float, no_baseline: bool, seed: int, as_json: bool, quiet: bool) -> None:
    """Train a small student on a teacher's softened outputs (knowledge distillation), and
    compare it with the teacher and with the same student trained on labels alone."""
    need("converter", "tensorflow")
    from edgefleet.progress import ProgressBars
    from edgefleet.quiet import quiet_native_output

    if (student_path is None) == (width is None):
        raise click.UsageError("give --student FILE or --width FRACTION (one of them)")
    if out.suffix != ".keras":
        raise click.BadParameter("the student is saved as a Keras 3 model: name it *.keras",
                                 param_hint="--out")
    show = not (quiet or as_json)
    with ProgressBars(show) as bars, quiet_native_output(expected=(click.ClickException,)):
        from edgefleet.converter.distill import DistillOptions
        from edgefleet.converter.distill_files import distill_files
        from edgefleet.converter.errors import ConversionError

        try:
            figures = distill_files(
                teacher, student_path, width, train_path, eval_path, out,
                DistillOptions(temperature=temperature, alpha=alpha, epochs=epochs,
                               learning_rate=learning_rate, seed=seed),
                baseline=not no_baseline, progress=bars.update if show else None)
        except ConversionError as exc:
            raise click.ClickException(str(exc)) from None
    if as_json:
        emit_json(figures)
        return
    click.echo(_distill_summary(figures, out))


def _distill_summary(f: dict[str, Any], out: Path) -> str:
    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.2f}%"

    lines = [f"wrote {out}",
             f"  teacher            {f['teacher_params']:>9,} parameters  top-1 {pct(f['teacher_top1'])}",
             f"  student (distilled) {f['student_params']:>8,} parameters  top-1 {pct(f['student_top1'])}"
             f"  ({100 * f['student_params'] / f['teacher_params']:.1f}% of the teacher)"]
    if f.get("baseline_top1") is not None:
        lines.append(f"  student (labels)   {f['student_params']:>9,} parameters  "
                     f"top-1 {pct(f['baseline_top1'])}")
    return "\n".join(lines)


# inspect
@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--trust", type=click.Path(file_okay=False, path_type=Path),
              help="Verify the bundle against the public keys in this folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def inspect(path: Path, trust: Path | None, as_json: bool) -> None:
    """Show a bundle's manifest (and verify it with --trust) or a .tflite model's tensors."""
    from edgefleet.inspect import inspect_path

    if trust is not None and not trust.is_dir():
        raise click.ClickException(f"--trust {trust} is not a folder of .pub keys")
    try:
        info = inspect_path(path, trust)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        emit_json(info)
    else:
        click.echo(info["text"])
    if (info.get("verification") or {}).get("ok") is False:
        sys.exit(1)  # scripts use `inspect --trust` as a check: a refused bundle must fail it


# publish
@main.command()
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--device", "devices", multiple=True, help="Device id to run it (repeatable).")
@click.option("--group", "groups", multiple=True, help="Group to run it (repeatable).")
@click.option("--key", type=click.Path(dir_okay=False, path_type=Path), default=Path(DEFAULT_KEY),
              show_default=True, help="Private key that signs the transfer manifest.")
@click.option("--chunk-size", default=64 * 1024, show_default=True, type=int,
              help="Bytes per retained chunk (1 KiB to 120 KiB).")
@broker_option
@prefix_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def publish(bundle: Path, devices: tuple[str, ...], groups: tuple[str, ...], key: Path,
            chunk_size: int, broker: str, prefix: str, as_json: bool) -> None:
    """Put BUNDLE on the broker as retained chunks and set the desired state."""
    need("device", "paho.mqtt")
    from edgefleet.fleet.connection import BrokerError, close, connect
    from edgefleet.fleet.publish import PublishError, publish_bundle
    from edgefleet.protocol.bundle import BundleError
    from edgefleet.protocol.delivery import DeliveryError
    from edgefleet.protocol.signing import SignatureError, SigningKey
    from edgefleet.protocol.topics import Topics

    if not devices and not groups:
        click.echo("note: no --device or --group given; the bundle is stored on the broker "
                   "but no device is told to run it", err=True)
    try:
        signing_key = SigningKey.load(key)
        client = connect(broker, "publish")
    except (SignatureError, BrokerError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        if as_json:
            result = publish_bundle(client, Topics(prefix), bundle, signing_key, devices, groups,
                                    chunk_size)
        else:
            from rich.progress import Progress

            with Progress(transient=True) as bar:
                task = bar.add_task("publishing chunks", total=None)
                result = publish_bundle(
                    client, Topics(prefix), bundle, signing_key, devices, groups, chunk_size,
                    progress=lambda done, total: bar.update(task, completed=done, total=total))
    except (BundleError, DeliveryError, PublishError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        close(client)
    if result.bundle_signed_by != signing_key.key_id:
        click.echo(f"note: the bundle is signed by key {result.bundle_signed_by}, the transfer by "
                   f"{signing_key.key_id}; devices must trust both", err=True)
    if as_json:
        emit_json(result.as_dict())
    else:
        targets = [f"device {d}" for d in devices] + [f"group {g}" for g in groups]
        click.echo(f"published {result.bundle_id}: {result.bundle_bytes} bytes in {result.chunks} "
                   f"chunk(s) in {result.seconds:.2f} s; desired for {', '.join(targets) or 'nobody'}")


# infer
@main.command()
@click.argument("inputs", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--device", required=True, help="Device id to ask.")
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(0, min_open=True),
              help="Seconds to wait.")
@broker_option
@prefix_option
@click.option("--json", "as_json", is_flag=True, help="Print the device's whole answer as JSON.")
def infer(inputs: Path, device: str, timeout: float, broker: str, prefix: str, as_json: bool) -> None:
    """Ask DEVICE over MQTT to run its active model on INPUTS (.npy: one sample or a batch)."""
    need("device", "paho.mqtt")
    import numpy as np

    from edgefleet.fleet.connection import BrokerError, close, connect
    from edgefleet.fleet.infer_client import InferenceFailed, MqttInferClient
    from edgefleet.protocol.messages import MAX_INFER_REQUEST_BYTES
    from edgefleet.protocol.topics import Topics, check_id

    try:
        check_id("device", device)
        x = np.load(inputs, allow_pickle=False)
    except ValueError as exc:
        raise click.ClickException(str(exc) if "device id" in str(exc)
                                   else f"{inputs} is not a readable .npy array: {exc}") from None
    except (OSError, EOFError) as exc:
        raise click.ClickException(f"{inputs} is not a readable .npy array: {exc}") from None
    if not isinstance(x, np.ndarray):
        raise click.ClickException(f"{inputs} holds several arrays (.npz); give one array as .npy")
    # base64 grows the array by a third; past the agent's limit the request would be refused
    if x.nbytes * 4 // 3 + 1024 > MAX_INFER_REQUEST_BYTES:
        raise click.ClickException(
            f"{x.nbytes:,} bytes of inputs exceed what one MQTT request may carry "
            f"({MAX_INFER_REQUEST_BYTES:,} bytes after base64); split the batch or use the local API")
    try:
        client = connect(broker, "infer")
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        answer = MqttInferClient(client, Topics(prefix), device).infer(x, timeout)
    except InferenceFailed as exc:
        raise click.ClickException(f"device {device}: {exc}") from None
    finally:
        close(client)
    if as_json:
        emit_json(answer)
    else:
        click.echo(f"{answer['bundle_id']}: top-1 {answer['top1']} "
                   f"(invoke {', '.join(f'{ms:.3f}' for ms in answer['latency_ms'][:8])} ms"
                   f"{' ...' if len(answer['latency_ms']) > 8 else ''})")


# agent
@main.group()
def agent() -> None:
    """The on-device daemon."""


@agent.command("run")
@click.option("--config", "config_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path), help="edgefleet.agent.toml")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
def agent_run(config_path: Path, log_level: str) -> None:
    """Follow the desired state, install bundles, serve inference, report telemetry."""
    need("device", "paho.mqtt", "psutil", "cryptography")
    from edgefleet.agent.config import ConfigError, load_config
    from edgefleet.agent.daemon import Agent, AgentStartError

    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        Agent(load_config(config_path)).run()
    except (ConfigError, AgentStartError) as exc:
        raise click.ClickException(str(exc)) from None


# monitor
@main.command()
@broker_option
@prefix_option
@click.option("--once", is_flag=True, help="Print one snapshot and exit.")
@click.option("--wait", default=12.0, show_default=True, type=float,
              help="With --once: listen this long at most (stops early when every online "
                   "device has sent telemetry).")
@click.option("--json", "as_json", is_flag=True, help="With --once: print the snapshot as JSON.")
def monitor(broker: str, prefix: str, once: bool, wait: float, as_json: bool) -> None:
    """A live table of the devices: status, model, latency, CPU, memory, temperature."""
    need("fleet", "rich")
    from edgefleet.fleet.connection import BrokerError, close, connect
    from edgefleet.fleet.monitor import collect, render_table, snapshot_json, watch
    from edgefleet.protocol.topics import Topics

    if as_json and not once:
        raise click.UsageError("--json goes with --once")
    try:
        client = connect(broker, "monitor")
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        if not once:
            watch(client, Topics(prefix))
            return
        view = collect(client, Topics(prefix), wait)
    finally:
        close(client)
    if as_json:
        click.echo(snapshot_json(view))
    else:
        from rich.console import Console

        Console().print(render_table(view))


# demo
@main.command()
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the demo's files here (default: a temporary folder, removed after).")
@click.option("--requests", "n_requests", default=200, show_default=True, type=click.IntRange(1),
              help="Inference requests to send to the agent.")
def demo(workdir: Path | None, n_requests: int) -> None:
    """The whole path on an embedded broker: train, convert, sign, publish, run, report."""
    need("converter", "tensorflow")
    need("fleet", "amqtt", "rich")
    from edgefleet.demo import run_demo

    sys.exit(run_demo(workdir, n_requests))
