"""PNG plot of a results document: Joyride/kernel ratios per workload and mode.

matplotlib comes with the ``bench`` extra (``pip install -e '.[bench]'``); without it
``render`` says so and the JSON and markdown results are still written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# The metric each workload is plotted by (the others are in the table).
HEADLINE = {"rr": ("p50_us", "p99_us", "p999_us"), "throughput": ("gbps", "cpu_s_per_gb"),
            "wrk": ("rps", "cpu_us_per_req"), "connrate": ("conn_per_s",)}
COLORS = {"service": "#1f77b4", "embedded": "#ff7f0e"}


def bars(doc: dict[str, Any]) -> list[tuple[str, dict[str, float | None]]]:
    """(label, mode -> ratio) for every plotted metric, in table order."""
    out = []
    for row in doc["results"]:
        for key in HEADLINE.get(row["kind"], ()):
            entry = row["metrics"].get(key)
            if entry is None:
                continue
            label = f"{row['workload']} · {row['server']} · {entry['label']}"
            out.append((label, {mode: (entry.get(mode) or {}).get("ratio")
                                for mode in ("service", "embedded")}))
    return out


def render(doc: dict[str, Any], path: Path) -> str | None:
    """Write the PNG; returns None on success, or why it could not be drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display: files only
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]')"
    rows = bars(doc)
    if not rows:
        return "no results to plot"
    height = 0.38
    fig, ax = plt.subplots(figsize=(10, 0.42 * len(rows) + 1.8))
    for i, mode in enumerate(("service", "embedded")):
        ys = [n + (i - 0.5) * height for n in range(len(rows))]
        vals = [r[1].get(mode) or 0.0 for r in rows]
        ax.barh(ys, vals, height=height, color=COLORS[mode], label=f"{mode} mode")
        for y, v, r in zip(ys, vals, rows, strict=True):
            text = f"{v:.2f}" if r[1].get(mode) is not None else "n/a"
            ax.text(max(v, 0) + 0.02, y, text, va="center", fontsize=7)
    ax.axvline(1.0, color="black", linewidth=1, linestyle="--")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r[0] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("Joyride / kernel (rates: higher is better; latency and CPU: lower)")
    m = doc["machine"]
    ax.set_title(f"Joyride vs kernel — {m['cpus']} vCPUs, Linux {m['kernel']}, veth, "
                 f"{m['date'][:10]} (medians of {doc['config']['repetitions']} alternating runs)",
                 fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
