"""The conversion report for people: a Markdown page and a PNG chart of the variants side
by side (report.json, the same figures for programs, is written by converter.artifacts)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


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
    if metrics.get("snr_db") is not None:  # no class scores: the lowest SNR over the outputs
        return f"SNR {metrics['snr_db']:.1f} dB"
    return "n/a"


def _short(name: str, limit: int = 60) -> str:
    """Converter tensor names join every fused op's name with ';': keep the first."""
    first = name.split(";")[0]
    return first if len(first) <= limit else first[: limit - 3] + "..."


def has_float32_variant(report: dict[str, Any]) -> bool:
    """A float32 variant is the float reference itself: tables and charts show it once."""
    return any(v["name"] == "float32" for v in report["variants"])


def render_markdown(report: dict[str, Any]) -> str:
    flt = report["float"]
    lat_threads = int(flt["latency_p50_ms"].get("all_threads", 0)) if flt["latency_p50_ms"] else 0
    lines = [
        f"# {report['name']} {report['version']}: conversion report",
        "",
        f"Created {report['created_at']} for target profile `{report['target']['profile']}`; "
        + (f"bundle holds **{report['chosen']}**." if report["chosen"] is not None
           else "**no bundle was written: the accuracy gate failed.**"),
        "",
        ("Recommendation: " if report["chosen"] is not None else "Gate: ") + report["recommendation"],
        "",
        _gate_line(report),
        "",
        f"| variant | size | compressed | size vs float | accuracy | loss vs float, pp | p50 ms 1 thread "
        f"| p50 ms {lat_threads or 'all'} threads | sparsity | Edge TPU ops |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    if not has_float32_variant(report):
        lines.append(
            f"| float32 (reference) | {_kib(flt['size_bytes'])} | {_kib(flt['compressed_bytes'])} | 1.00 "
            f"| {_pct(flt['metrics'].get('top1'))} | - | {_ms(flt['latency_p50_ms'].get('1'))} "
            f"| {_ms(flt['latency_p50_ms'].get('all'))} | {flt['sparsity']:.2f} | - |")
    for v in report["variants"]:
        gate = v["gate"]
        # negative: better than float; an output judged by SNR has no drop in points
        drop = "n/a" if gate is None or gate["measure"] == "snr" else f"{gate['drop_pp']:.2f}"
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
              "top class without labels (of the class-score output the labels belong to, else the first; "
              "without class scores, the lowest SNR over the outputs); the loss is in percentage points "
              f"(negative: better than float). {latency_note}"]
    for failed in report.get("failed_variants", []):
        lines += ["", f"## {failed['name']}: failed", "", f"- {failed['error']}"]
    for v in report["variants"]:
        extra = []
        m = v["metrics"]
        if m.get("agreement") is not None:
            topk = f", top-{m['k']} {_pct(m['topk'])}" if m.get("topk") is not None else ""
            extra.append(f"against the float model: same top class {_pct(m['agreement'])}, "
                         f"SNR {m['snr_db']:.1f} dB, cosine {m['cosine']:.4f}{topk}")
        extra += _task_lines(m.get("task"))
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
        table = _outputs_table(m, v["gate"])
        if extra or table:
            lines += ["", f"## {v['name']}", ""] + table + [f"- {e}" for e in extra]
    if report.get("pruning"):
        p = report["pruning"]
        lines += ["", "## Pruning", "",
                  f"Overall kernel sparsity {p['overall_sparsity']:.3f} ({p['framework']}); per layer:", ""]
        lines += [f"- `{name}`: {value:.3f}" for name, value in p["layer_sparsity"].items()]
    if report["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in report["warnings"]]
    return "\n".join(lines) + "\n"


def _gate_line(report: dict[str, Any]) -> str:
    gate = report.get("gate") or {}
    if not gate.get("on"):
        return ("The accuracy gate was off (no evaluation data, or --max-accuracy-drop none).")
    return (f"Accuracy gate, against the float model: class-score outputs may lose at most "
            f"{gate['max_accuracy_drop_pp']:g} pp (top-1, or agreement without labels), every other output "
            f"needs an SNR of at least {gate['min_snr_db']:g} dB.")


def _num(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


def _outputs_table(metrics: dict[str, Any], gate: dict[str, Any] | None) -> list[str]:
    """Every output's figures against the float model, and its verdict."""
    outputs = metrics.get("outputs") or {}
    if not outputs:
        return []
    verdicts = (gate or {}).get("outputs") or {}
    lines = ["| output | holds | SNR dB | cosine | max abs error | same top class | top-1 | gate |",
             "|---|---|---|---|---|---|---|---|"]
    for name, f in outputs.items():
        verdict = verdicts.get(name)
        mark = "-" if verdict is None else "pass" if verdict["passed"] else "**fail**"
        if verdict and verdict.get("constant_reference"):
            mark += " (float output constant)"
        elif f.get("constant"):
            mark += " (output constant)"
        lines.append(f"| `{_short(name)}` | {'class scores' if f.get('class_scores') else 'values'} "
                     f"| {f['snr_db']:.1f} | {f['cosine']:.4f} | {_num(f.get('max_abs_error'))} "
                     f"| {_pct(f.get('agreement'))} | {_pct(f.get('top1'))} | {mark} |")
    return [*lines, ""]


def _task_lines(task: dict[str, Any] | None) -> list[str]:
    if not task:
        return []
    lines = [f"{task['task']}: {task['note']}"] if task.get("note") else []
    for name, f in task["outputs"].items():
        if task["task"] == "detection":
            lines.append(f"detection `{_short(name)}` with `{_short(f['scores'])}`: {f['matched']} of "
                         f"{f['float_detections']} float detections matched (IoU >= {f['match_iou']:g}, "
                         f"score > {f['score_threshold']:g}), {f['variant_detections']} detections in all, "
                         f"mean IoU {_num(f['mean_iou'], 3)}; {f['layout']}")
        elif task["task"] == "landmarks":
            share = f["relative_to_extent"]
            rel = f" ({_pct(share)} of the points' extent)" if share is not None else ""
            lines.append(f"landmarks `{_short(name)}`: {f['points']} points, mean point error "
                         f"{_num(f['mean_point_error'])}{rel}")
        elif task["task"] == "segmentation":
            lines.append(f"segmentation `{_short(name)}`: mask IoU {f['mask_iou']:.4f}")
    return lines


def render_chart(report: dict[str, Any], path: Path) -> None:
    chart_figure(report).savefig(path, dpi=100)


def chart_figure(report: dict[str, Any]) -> Figure:
    """Three panels: size (raw and compressed), accuracy, latency (1 thread and all cores).

    Every bar carries its value; the chosen variant and failed variants are named on the
    axis; a panel with nothing measured says so, and an accuracy axis that does not start
    at 0 says where it starts.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on build machines
    from matplotlib.figure import Figure

    flt = report["float"]
    rows: list[tuple[str, dict[str, Any] | None]] = []  # None: a variant that failed
    if not has_float32_variant(report):
        rows.append(("float32 (reference)", flt))
    for v in report["variants"]:
        rows.append((f"{v['name']} (chosen)" if v["name"] == report["chosen"] else v["name"], v))
    rows += [(f"{f['name']} (failed)", None) for f in report.get("failed_variants", [])]

    def values(pick: Any) -> list[float | None]:
        return [None if row is None else pick(row) for _, row in rows]

    def kib(key: str) -> Any:
        return lambda r: r[key] / 1024

    def latency(key: str) -> Any:
        return lambda r: r["latency_p50_ms"].get(key)

    fig = Figure(figsize=(13, 4.8))
    axes = fig.subplots(1, 3)
    _panel(axes[0], rows, "size (KiB)", [("file", values(kib("size_bytes"))),
                                         ("compressed", values(kib("compressed_bytes")))], "%.1f",
           "no model measured")
    _panel(axes[1], rows, "top-1 % (or agreement %)", [("accuracy", values(_accuracy_pct))], "%.1f",
           "no --eval data")
    _cut_mark(axes[1], values(_accuracy_pct))
    _panel(axes[2], rows, "latency p50 (ms)", [("1 thread", values(latency("1"))),
                                                ("all cores", values(latency("all")))], "%.3f",
           "--no-latency")
    chosen = report["chosen"] or "none, the accuracy gate failed"  # None: no bundle was written
    fig.suptitle(f"{report['name']} {report['version']}: variants (chosen: {chosen})")
    fig.tight_layout()
    return fig


def _accuracy_pct(row: dict[str, Any]) -> float | None:
    m = row["metrics"]
    value = m.get("top1") if m.get("top1") is not None else m.get("agreement")
    return None if value is None else 100 * value


def _panel(ax: Axes, rows: list[tuple[str, dict[str, Any] | None]], title: str,
           series: list[tuple[str, list[float | None]]], fmt: str, unmeasured: str) -> None:
    width = 0.8 / len(series)
    measured = any(v is not None for _, vals in series for v in vals)
    for k, (label, vals) in enumerate(series):
        shown = [(i, v) for i, v in enumerate(vals) if v is not None]
        if not shown:
            continue
        offset = (k - (len(series) - 1) / 2) * width
        bars = ax.bar([i + offset for i, _ in shown], [v for _, v in shown], width,
                      label=label if len(series) > 1 else None)
        ax.bar_label(bars, fmt=fmt, fontsize=7, padding=2, rotation=90 if len(series) > 1 else 0)
    at_bottom = ax.get_xaxis_transform()  # x in data, y in axes coordinates: visible on a cut axis
    for i, (_, row) in enumerate(rows):
        if row is None:
            ax.text(i, 0.02, "failed", rotation=90, ha="center", va="bottom", color="tab:red", fontsize=8,
                    transform=at_bottom)
        elif measured and all(vals[i] is None for _, vals in series):
            ax.text(i, 0.02, "n/a", rotation=90, ha="center", va="bottom", color="gray", fontsize=8,
                    transform=at_bottom)
    if not measured:
        ax.text(0.5, 0.5, f"not measured\n({unmeasured})", transform=ax.transAxes, ha="center",
                va="center", color="gray")
        ax.set_yticks([])
    elif len(series) > 1:
        ax.legend(fontsize=8)
    ax.margins(y=0.2)  # room for the value labels
    ax.set_title(title)
    ax.set_xlim(-0.6, len(rows) - 0.4)  # every row has its place, a failed one too
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([name for name, _ in rows], rotation=30, ha="right")
    for tick, (name, _) in zip(ax.get_xticklabels(), rows, strict=True):
        if name.endswith("(chosen)"):
            tick.set_fontweight("bold")
        elif name.endswith("(failed)"):
            tick.set_color("tab:red")


def _cut_mark(ax: Axes, values: list[float | None]) -> None:
    """Zoom in on accuracies close together, and say that the axis is cut when it is."""
    measured = [v for v in values if v is not None]
    if not measured:
        return
    low = max(0.0, 5 * ((min(measured) - 5) // 5))
    ax.set_ylim(low, 100 + (100 - low) * 0.08)  # room above 100 for the value labels
    ax.set_yticks([t for t in ax.get_yticks() if low <= t <= 100])
    if low > 0:
        ax.set_ylabel(f"axis starts at {low:g} %, not 0")
        for x in (-0.015, 0.015):  # the usual broken-axis mark on the cut edge
            ax.plot([x - 0.01, x + 0.01], [-0.01, 0.01], transform=ax.transAxes, color="k",
                    clip_on=False, linewidth=1)
