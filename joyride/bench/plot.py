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
    """(label, mode -> ratio or None if it failed) for every plotted metric, in table
    order; modes the server does not run in are absent."""
    out = []
    for row in doc["results"]:
        for key in HEADLINE.get(row["kind"], ()):
            entry = row["metrics"].get(key)
            if entry is None:
                continue
            label = f"{row['workload']} · {row['server']} · {entry['label']}"
            # Only the modes this server runs in: native binaries cannot embed the stack.
            out.append((label, {mode: (entry.get(mode) or {}).get("ratio")
                                for mode in row["modes"]}))
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
    # Ratios on a log scale, bars growing from 1 (parity): 0.5x and 2x look equally far.
    ax.set_xscale("log")
    for i, mode in enumerate(("service", "embedded")):
        for n, (_label, ratios) in enumerate(rows):
            y = n + (i - 0.5) * height
            if mode not in ratios:
                continue
            v = ratios[mode]
            if v is None or v <= 0:
                ax.text(1.0, y, f" {mode}: failed (see the table)", va="center",
                        fontsize=6, color="grey")
                continue
            ax.barh(y, v - 1.0, left=1.0, height=height, color=COLORS[mode])
            ax.text(v * (1.04 if v >= 1 else 0.96), y, f"{v:.2f}", va="center",
                    ha="left" if v >= 1 else "right", fontsize=7)
    ax.axvline(1.0, color="black", linewidth=1, linestyle="--")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r[0] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("Joyride / kernel, log scale (rates: right is better; latency and CPU: "
                  "left is better)")
    m = doc["machine"]
    ax.set_title(f"Joyride vs kernel — {m['cpus']} vCPUs, Linux {m['kernel']}, veth, "
                 f"{m['date'][:10]} (medians of {doc['config']['repetitions']} alternating runs)",
                 fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in COLORS.values()]
    ax.legend(handles, [f"{m} mode" for m in COLORS], loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
