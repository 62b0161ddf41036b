"""The benchmark as markdown: one row per format and thread count, speed and accuracy side by side."""

from __future__ import annotations

from pathlib import Path

COLUMNS = [
    "format", "threads", "gates", "size MB", "load s", "p50 ms", "p90 ms", "p99 ms", "img/s (batch)",
    "e2e ms/frame (× p50)", "peak RSS MB", "× fp32 limit", "× int8 limit", "NEU", "GC10 incl.", "X-SDD",
    "answer agr.", "top-1 agr.", "error",
]
DASH = "–"


def _num(value, fmt: str = "{:.1f}") -> str:
    return DASH if value is None else fmt.format(value)


def _size(value) -> str:
    return DASH if value is None else (f"{value:.1f}" if value >= 1 else f"{value:.3f}")


def flops_text(flops: int) -> str:
    return f"{flops / 1e9:.3f} GFLOP" if flops >= 1e7 else f"{flops:,} FLOP"


def _share(group: dict | None) -> str:
    if not group:
        return DASH
    text = f"{100 * group['accuracy']:.1f} %"
    return text + (f" ({group['correct']}/{group['images']})" if group.get("images") is not None else "")


def _pct(value: float | None) -> str:
    return DASH if value is None else f"{100 * value:.2f} %"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def row_cells(row: dict) -> list[str]:
    accuracy = row.get("accuracy") or {}
    latency = row.get("latency_ms") or {}
    throughput = row.get("throughput") or {}
    e2e = row.get("e2e") or {}
    limit = row.get("limit") or {}
    name = row["format"] + (" (shipped)" if row.get("shipped") else "")
    gates = accuracy.get("gates") or DASH
    if row.get("rejected") and "rejected" not in gates:
        gates += ", rejected/"
    if "per_frame_ms" in e2e and latency.get("p50"):
        e2e_text = f"{e2e['per_frame_ms']:.1f} ({e2e['per_frame_ms'] / latency['p50']:.2f}×)"
    else:
        e2e_text = DASH
    if throughput.get("best_images_per_s") is not None:
        tp_text = f"{throughput['best_images_per_s']:.1f} ({throughput['best_batch']})"
    else:
        tp_text = DASH
    agreement = accuracy.get("agreement")
    errors = [row.get("error")] if row.get("error") else []
    if e2e.get("error") and not row["format"].startswith("keras"):
        errors.append(f"e2e: {e2e['error']}")
    cells = [
        name, str(row["threads"]), gates, _size(row.get("size_mb")), _num(row.get("load_s"), "{:.3g}"),
        _num(latency.get("p50"), "{:.2f}"), _num(latency.get("p90"), "{:.2f}"), _num(latency.get("p99"), "{:.2f}"),
        tp_text, e2e_text, _num((row.get("rss_mb") or {}).get("batch1_peak"), "{:.0f}"),
        _num(limit.get("x_fp32"), "{:.2f}"), _num(limit.get("x_int8"), "{:.2f}"),
        _share(accuracy.get("neu")), _share(accuracy.get("gc10_inclusion")), _share(accuracy.get("xsdd")),
        _pct(accuracy.get("answer_agreement")), _pct(agreement), "; ".join(errors) or "",
    ]
    return [_cell(c) for c in cells]


def markdown_table(rows: list[dict]) -> str:
    aligns = ["---" if c in ("format", "gates", "error") else "---:" for c in COLUMNS]
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join(aligns) + "|"]
    lines += ["| " + " | ".join(row_cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def limit_lines(result: dict) -> list[str]:
    flops = result.get("flops")
    lines = []
    if flops:
        lines.append(f"- Model: {flops_text(flops['flops'])} per image, counted from the graph of "
                     f"`{Path(flops['source']).name}` ({flops['layers']} conv/matmul layers, 2 FLOPs per "
                     "multiply-add; elementwise work not counted).")
    else:
        lines.append("- Model FLOPs: not counted (no readable graph).")
    for threads, gemm in result.get("gemm", {}).items():
        if "error" in gemm:
            lines.append(f"- {threads} thread(s): GEMM rates not measured ({gemm['error']}).")
            continue
        sgemm, int8 = gemm["sgemm"], gemm["int8"]
        text = (f"- {threads} thread(s): numpy sgemm {sgemm['gflops']:.1f} GFLOP/s ({sgemm['n']}², best of "
                f"{sgemm['repeats']}, {sgemm['blas']})")
        if flops:
            text += f" → fp32 limit {flops['flops'] / (sgemm['gflops'] * 1e9) * 1000:.3g} ms per image"
        if int8.get("gops"):
            text += f"; int8 GEMM {int8['gops']:.1f} GOP/s ({int8['kernel']})"
            if flops:
                text += f" → int8 limit {flops['flops'] / (int8['gops'] * 1e9) * 1000:.3g} ms"
        else:
            text += f"; int8 GEMM {int8.get('note', 'not measured')}"
        lines.append(text + ".")
    return lines


def standard_notes(rows: list[dict], flops: dict | None, video_frames: int) -> list[str]:
    notes = [
        "p50/p90/p99: batch-1 engine time on the fixed inputs, already preprocessed (quantised graphs include "
        "quantising the input and dequantising the output), after the warm-up runs.",
        "img/s (batch): best throughput over the batch sizes tried, with that batch size.",
        "peak RSS: the whole worker process (Python, numpy, OpenCV, the engine and the model) after the batch-1 "
        "runs; each row runs in a process of its own. The Keras row includes TensorFlow.",
        "× fp32 limit: p50 / (model FLOPs / numpy sgemm rate at the same thread count): how far the format is "
        "from running every multiply-add at this machine's fp32 matrix-multiply speed. × int8 limit: the same "
        "against the int8 GEMM rate, for quantised formats.",
        "Accuracy columns and gates come from export_report.json (edge-export's checks through the device code "
        "path); artifacts that failed a gate were moved to rejected/ and are measured there.",
    ]
    if any(r.get("batch_fixed") for r in rows):
        notes.append("LiteRT graphs have their batch fixed at 1: their throughput is the batch-1 loop.")
    if video_frames:
        notes.append(f"e2e: edge-classify's own pipeline (edge_runtime.cli.run) on a {video_frames}-frame MJPG "
                     "video of the fixed inputs, records to a JSONL file: wall time per frame for decode + "
                     "preprocess + infer + write, and its ratio to p50. Not applicable to the Keras row.")
    return notes


def _yes(flags: set[str], *names: str) -> str:
    return "yes" if flags.intersection(names) else "no"


def markdown_report(result: dict, title: str | None = None) -> str:
    machine = result["machine"]
    isa = set(machine.get("isa", []))
    load = machine.get("load_average_start"), machine.get("load_average_end")
    generation = f", {machine['generation']}" if machine.get("generation") else ""
    lines = [
        f"# {title or 'edge-bench — ' + result['export_dir']}",
        "",
        f"- Machine: {machine['model']} ({machine.get('machine', '')}{generation}), {machine['cores']} logical cores; "
        "ISA flags: "
        f"{', '.join(machine['isa']) or 'none read'}; AVX-512 {_yes(isa, 'avx512f')}, VNNI "
        f"{_yes(isa, 'avx512_vnni', 'avx512vnni', 'avx_vnni')}; Python {machine['python']}.",
        f"- Command: `{result['command']}` ({result['created']}, {result['wall_s']:.0f} s).",
        f"- Inputs: {result['inputs']['description']}; {result['settings']['warmup']} warm-up + "
        f"{result['settings']['repeats']} timed runs per row; batch sizes "
        f"{', '.join(map(str, result['settings']['batch_sizes']))}.",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in result.get("versions", {}).items()) + ".",
    ]
    if load[0] is not None:
        lines.append(f"- Load average (1/5/15 min) at start {load[0]}, at end {load[1]}: other work on the CPU "
                     "slows every row.")
    lines += limit_lines(result)
    lines += ["", markdown_table(result["rows"]), "", "Notes:", ""]
    lines += [f"- {n}" for n in result.get("notes", [])]
    return "\n".join(lines) + "\n"


def results_page(result: dict) -> str:
    """benchmarks/RESULTS.md: the same report, marked as generated."""
    header = ("<!-- Written by edge-bench --results; regenerate it with the command below, do not edit the "
              "figures by hand. -->\n")
    return header + markdown_report(result, title="Benchmarks: every export format on this machine")
