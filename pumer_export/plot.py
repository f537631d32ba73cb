"""The benchmark plot: throughput against batch size, baseline vs PuMer, one panel per backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_throughput(bench: dict[str, Any], path: str | Path) -> Path:
    """Write a PNG of ``bench["results"]`` to ``path`` (atomically; matplotlib's Agg backend)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .fsutil import atomic_output_file

    results = bench["results"]
    backends = list(dict.fromkeys(r["backend"] for r in results)) or ["(none)"]
    dtypes = list(dict.fromkeys(r["dtype"] for r in results))
    ideal = bench.get("flops", {}).get("flop_ideal")
    fig, axes = plt.subplots(1, len(backends), figsize=(4.2 * len(backends), 3.6), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, backend in zip(axes[0], backends):
        for d_index, dtype in enumerate(dtypes):
            reduced = (bench.get("settings", {}).get("method") or {}).get("name", "pumer")
            for v_index, (variant, style, marker) in enumerate((("baseline", "--", "s"), ("pumer", "-", "o"))):
                rows = sorted((r for r in results if r["backend"] == backend and r["dtype"] == dtype
                               and r["variant"] == variant), key=lambda r: r["batch_size"])
                if not rows:
                    continue
                color = colors[(2 * d_index + v_index) % len(colors)]
                ax.plot([r["batch_size"] for r in rows], [r["throughput"] for r in rows], style, marker=marker,
                        color=color, label=f"{reduced if variant == 'pumer' else variant} {dtype}")
                if variant == "baseline" and ideal:  # where PuMer would be if it ran at the FLOP-ideal ratio
                    ax.plot([r["batch_size"] for r in rows], [r["throughput"] * ideal for r in rows], ":",
                            color=colors[(2 * d_index + 1) % len(colors)], alpha=0.7,
                            label=f"FLOP-ideal {ideal:.2f}x {dtype}")
        batches = sorted({r["batch_size"] for r in results if r["backend"] == backend})
        ax.set_xscale("log", base=2)
        if batches:
            ax.set_xticks(batches, [str(b) for b in batches])
            ax.minorticks_off()
        ax.set_xlabel("batch size")
        ax.set_ylabel("samples / s")
        ax.set_ylim(bottom=0)
        ax.set_title(backend)
        ax.grid(True, alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=8)
    title = "PuMer vs baseline throughput"
    if ideal:
        title += f" (FLOP-ideal speedup {ideal:.2f}x)"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_output_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
