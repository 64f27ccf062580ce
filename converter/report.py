"""The conversion report for people: a Markdown page and a PNG chart of the variants side
by side (report.json, the same figures for programs, is written by converter.artifacts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


def _kib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 1024:.1f} KiB"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _accuracy(metrics: dict[str, Any]) -> str:
    if metrics.get("top1") is not None:
        return _pct(metrics["top1"])
    if metrics.get("agreement") is not None:
        return f"{_pct(metrics['agreement'])} agree"
    return "n/a"


def _short(name: str, limit: int = 60) -> str:
    """Converter tensor names join every fused op's name with ';': keep the first."""
    first = name.split(";")[0]
    return first if len(first) <= limit else first[: limit - 3] + "..."


def render_markdown(report: dict[str, Any]) -> str:
    flt = report["float"]
    lat_threads = int(flt["latency_p50_ms"].get("all_threads", 0)) if flt["latency_p50_ms"] else 0
    lines = [
        f"# {report['name']} {report['version']}: conversion report",
        "",
        f"Created {report['created_at']} for target profile `{report['target']['profile']}`; "
        f"bundle holds **{report['chosen']}**.",
        "",
        f"Recommendation: {report['recommendation']}",
        "",
        f"| variant | size | compressed | size vs float | accuracy | loss vs float, pp | p50 ms 1 thread "
        f"| p50 ms {lat_threads or 'all'} threads | sparsity | Edge TPU ops |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| float32 (reference) | {_kib(flt['size_bytes'])} | {_kib(flt['compressed_bytes'])} | 1.00 "
        f"| {_pct(flt['metrics'].get('top1'))} | - | {_ms(flt['latency_p50_ms'].get('1'))} "
        f"| {_ms(flt['latency_p50_ms'].get('all'))} | {flt['sparsity']:.2f} | - |",
    ]
    for v in report["variants"]:
        gate = v["gate"]
        drop = "n/a" if gate is None else f"{gate['drop_pp']:.2f}"  # negative: better than float
        tpu = v["edgetpu"]
        tpu_text = "-" if not tpu else f"{tpu['ops_mapped']}/{tpu['ops_total']}"
        lines.append(
            f"| {v['name']} | {_kib(v['size_bytes'])} | {_kib(v['compressed_bytes'])} "
            f"| {v['size_ratio']:.2f} | {_accuracy(v['metrics'])} | {drop} "
            f"| {_ms(v['latency_p50_ms'].get('1'))} | {_ms(v['latency_p50_ms'].get('all'))} "
            f"| {v['sparsity']:.2f} | {tpu_text} |")
    latency_note = (
        "Latency is the median `invoke()` time with "
        f"{report['machine']['runtime']} on this machine ({report['machine']['cpu']}); "
        "on an x86-64 machine with AVX2 an int8 model is not necessarily faster than "
        "float32 under XNNPACK, and the table shows what was measured."
        if flt["latency_p50_ms"] else "Latency was not measured (--no-latency).")
    lines += ["", "Accuracy is top-1 on the evaluation labels, or agreement with the float model's "
              "top class without labels; the loss is in percentage points (negative: better than "
              f"float). {latency_note}"]
    for failed in report.get("failed_variants", []):
        lines += ["", f"## {failed['name']}: failed", "", f"- {failed['error']}"]
    for v in report["variants"]:
        extra = []
        m = v["metrics"]
        if m.get("agreement") is not None:
            topk = f", top-{m['k']} {_pct(m['topk'])}" if m.get("topk") is not None else ""
            extra.append(f"against the float model: same top class {_pct(m['agreement'])}, "
                         f"SNR {m['snr_db']:.1f} dB, cosine {m['cosine']:.4f}{topk}")
        if v["gate"] is not None and not v["gate"]["passed"]:
            extra.append(f"gate: {v['gate']['message']}")
        if v["kept_float_layers"]:
            extra.append(f"kept in float: {', '.join(v['kept_float_layers'])}")
        if v["worst_layers"]:
            worst = ", ".join(f"`{_short(w['name'])}` {w['op']} ({w['rmse_over_scale']:.3g})"
                              for w in v["worst_layers"][:3])
            extra.append(f"worst layers (rmse/scale): {worst}")
        on_edgetpu = report["target"].get("accelerator") == "edgetpu"
        if v["edgetpu"] and not v["edgetpu"]["fully_mappable"] and on_edgetpu:
            extra.append(f"Edge TPU: {v['edgetpu']['split']}")
        if v["xnnpack_sparse"] is not None:
            extra.append(f"XNNPACK sparse inference: {v['xnnpack_sparse']['summary']}")
        extra += v["notes"]
        if extra:
            lines += ["", f"## {v['name']}", ""] + [f"- {e}" for e in extra]
    if report.get("pruning"):
        p = report["pruning"]
        lines += ["", "## Pruning", "",
                  f"Overall kernel sparsity {p['overall_sparsity']:.3f} ({p['framework']}); per layer:", ""]
        lines += [f"- `{name}`: {value:.3f}" for name, value in p["layer_sparsity"].items()]
    if report["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in report["warnings"]]
    return "\n".join(lines) + "\n"


def render_chart(report: dict[str, Any], path: Path) -> None:
    """Three panels: size (raw and compressed), accuracy, latency (1 thread and all cores)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on build machines
    import matplotlib.pyplot as plt

    flt = report["float"]
    names = ["float32", *[v["name"] for v in report["variants"]]]
    rows = [flt, *report["variants"]]
    size = [r["size_bytes"] / 1024 for r in rows]
    compressed = [r["compressed_bytes"] / 1024 for r in rows]
    acc = [100 * (r["metrics"].get("top1") if r["metrics"].get("top1") is not None
                  else (r["metrics"].get("agreement") or 0.0)) for r in rows]
    lat1 = [r["latency_p50_ms"].get("1", 0.0) for r in rows]
    lat_all = [r["latency_p50_ms"].get("all", 0.0) for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    x = range(len(names))
    width = 0.4
    axes[0].bar([i - width / 2 for i in x], size, width, label="file")
    axes[0].bar([i + width / 2 for i in x], compressed, width, label="compressed")
    axes[0].set_title("size (KiB)")
    axes[0].legend()
    axes[1].bar(list(x), acc, color="tab:green")
    axes[1].set_ylim(max(0.0, min(acc) - 5), 100)
    axes[1].set_title("top-1 % (or agreement %)")
    axes[2].bar([i - width / 2 for i in x], lat1, width, label="1 thread")
    axes[2].bar([i + width / 2 for i in x], lat_all, width, label="all cores")
    axes[2].set_title("latency p50 (ms)")
    axes[2].legend()
    for ax in axes:
        ax.set_xticks(list(x))
        ax.set_xticklabels(names, rotation=30, ha="right")
    fig.suptitle(f"{report['name']} {report['version']}: variants (chosen: {report['chosen']})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
