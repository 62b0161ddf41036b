"""bench.png: batch-1 latency per format and thread count (p50 bar, p90/p99 marks), accuracy written beside it."""

from __future__ import annotations

from pathlib import Path

COLOURS = {"reference": "#7f7f7f", "pass": "#2c7fb8", "fail": "#e6550d", "unknown": "#9ecae1"}


def _verdict(row: dict) -> str:
    gates = (row.get("accuracy") or {}).get("gates") or ""
    if gates == "reference":
        return "reference"
    if gates.startswith("pass"):
        return "pass"
    return "fail" if gates.startswith("FAIL") else "unknown"


def _annotation(row: dict) -> str:
    if row.get("error"):
        return "error: " + row["error"][:70]
    accuracy, latency = row.get("accuracy") or {}, row["latency_ms"]
    parts = [f"{latency['p50']:.3g} ms"]
    neu = accuracy.get("neu")
    if neu:
        parts.append(f"NEU {100 * neu['accuracy']:.1f} %")
    if accuracy.get("agreement") is not None:
        parts.append(f"agree {100 * accuracy['agreement']:.1f} %")
    if accuracy.get("gates"):
        parts.append(accuracy["gates"])
    return " · ".join(parts)


def latency_chart(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    labels = [f"{r['format']}{' (shipped)' if r.get('shipped') else ''} · {r['threads']} thr" for r in rows]
    p50 = [r["latency_ms"]["p50"] if not r.get("error") else 0.0 for r in rows]
    top = max([r["latency_ms"]["p99"] for r in rows if not r.get("error")] or [1.0])
    fig, ax = plt.subplots(figsize=(11, 1.2 + 0.42 * len(rows)))
    y = list(range(len(rows)))[::-1]
    ax.barh(y, p50, color=[COLOURS[_verdict(r)] for r in rows], height=0.6)
    for yi, row in zip(y, rows):
        if row.get("error"):
            ax.text(top * 0.01, yi, _annotation(row), va="center", fontsize=8, color="#b30000")
            continue
        latency = row["latency_ms"]
        ax.plot([latency["p50"], latency["p99"]], [yi, yi], color="black", linewidth=1)
        ax.plot([latency["p90"]], [yi], marker="|", color="black", markersize=8)
        ax.plot([latency["p99"]], [yi], marker="|", color="black", markersize=12)
        ax.text(latency["p99"] + top * 0.02, yi, _annotation(row), va="center", fontsize=8)
    flops = result.get("flops")
    for i, (threads, gemm) in enumerate(sorted(result.get("gemm", {}).items())):
        rate = (gemm.get("sgemm") or {}).get("gflops")
        if flops and rate:
            limit = flops["flops"] / (rate * 1e9) * 1000
            ax.axvline(limit, color="#31a354", linestyle="--", linewidth=1)
            ax.text(limit, len(rows) - 0.4 + 0.3 * i, f" fp32 limit {threads} thr", color="#31a354", fontsize=7)
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color=c, label=k) for k, c in COLOURS.items() if k != "unknown"],
              loc="lower right", fontsize=7, title="export gates", title_fontsize=7)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlim(0, top * 2.1)
    ax.set_ylim(-0.7, len(rows) + 0.3)
    ax.set_xlabel("batch-1 latency, ms (bar p50; marks p90, p99)")
    ax.set_title(f"edge-bench — {result['machine']['description']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
