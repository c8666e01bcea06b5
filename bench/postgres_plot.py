#!/usr/bin/env python3
"""Turns fasteners_postgres_bench --json output into a picture (PNG or SVG, by the extension)."""

import sys

from plot_common import FAIL, OURS, colour, plt, ran, read_results, row_axis, save, targets_panel

P99 = "#c7c7c7"


def format_us(v):
    return f"{v:.3g} µs" if v < 1000 else f"{v / 1000:.3g} ms"


def median_and_p99(ax, rows, field, raw_key, limits, xlabel, title):
    """Bars of each row's median (coloured) and p99 (grey), with the targets as lines."""
    labels = [r["label"] for r in rows]
    medians = [r[field]["median"] / 1e3 for r in rows]
    p99s = [r[field]["p99"] / 1e3 for r in rows]
    positions = list(range(len(rows)))
    # The axis shows the medians; a p99 far beyond them (a busy machine) is cut at the edge.
    right = max(medians) * 2.4
    ax.barh([p + 0.2 for p in positions], [min(q, right) for q in p99s], height=0.4, color=P99)
    ax.barh([p - 0.2 for p in positions], medians, height=0.4, color=[colour(r["key"]) for r in rows])
    row_axis(ax, positions, labels, xlabel)
    raw = next((r[field]["median"] / 1e3 for r in rows if r["key"] == raw_key), None)
    for p, v, q in zip(positions, medians, p99s):
        ratio = f" ({v / raw:.2f}x raw)" if raw else ""
        ax.annotate(f" {format_us(v)}{ratio}", (v, p - 0.2), va="center", fontsize=7)
        if q <= right * 0.8:
            ax.annotate(f" p99 {format_us(q)}", (q, p + 0.2), va="center", fontsize=6.5,
                        color="#555555")
        else:  # Inside the bar's end; an arrow when the bar is cut.
            arrow = " →" if q > right else " "
            ax.annotate(f"p99 {format_us(q)}{arrow}", (min(q, right), p + 0.2), va="center",
                        ha="right", fontsize=6.5, color="#333333")
    handles = [plt.Rectangle((0, 0), 1, 1, color=OURS), plt.Rectangle((0, 0), 1, 1, color=P99)]
    names = ["median", "p99"]
    if raw:
        for factor, style in zip(limits, ("--", ":")):
            ax.axvline(factor * raw, color=FAIL, linestyle=style, linewidth=0.8)
            handles.append(plt.Line2D([], [], color=FAIL, linestyle=style, linewidth=0.8))
            names.append(f"target: {factor:g}x raw median")
    ax.legend(handles=handles, labels=names, fontsize=7, loc="upper center",
              bbox_to_anchor=(0.5, -0.13), ncol=len(names))
    ax.set_xlim(0, right)
    ax.set_title(title, fontsize=10)


def plot_targets(ax, data):
    targets_panel(ax, "Targets, against the raw libpq figures of this run", data["targets"], 0.08,
                  (0.55, 0), 7.5, 0.16)


def main():
    args, data = read_results(__doc__, "fasteners_postgres_bench", "docs/postgres-benchmark.png")

    m = data["machine"]
    v = data["versions"]
    s = data["settings"]
    fig = plt.figure(figsize=(14, 8.5))
    grid = fig.add_gridspec(2, 2, height_ratios=(2.6, 1))
    handoff = fig.add_subplot(grid[0, 0])
    pairs = fig.add_subplot(grid[0, 1])
    targets = fig.add_subplot(grid[1, :])
    busy = " — a busy machine" if m.get("busy") else ""
    peer = f"psycopg2 {v['psycopg2']} (Python {v['python']})" if v["psycopg2"] else "no psycopg2"
    fig.suptitle(
        f"fasteners {v['fasteners']} on PostgreSQL {v['server'].split()[0]} "
        f"({data['server_via']}, same machine), libpq {v['libpq']}, peer {peer}\n"
        f"{m['cpu']}, {m['cores']} cores, {m['kernel']}; {m['date']}; {m['build']}; "
        f"load average before {m['load_before']}, after {m['load_after']}{busy}",
        fontsize=10)
    median_and_p99(handoff, ran(data["handoff"]), "latency_ns", "raw_libpq", (1.2, 1.5),
                   "µs from A's release call to B's acquire returning",
                   f"1. Hand-off to a waiter in another process ({s['handoff_rounds']} rounds)")
    median_and_p99(pairs, ran(data["pairs"]), "pair_ns", "raw_libpq", (1.2,),
                   "µs per acquire+release pair",
                   f"2. Uncontended acquire+release, session kept ({s['pairs']} pairs)")
    plot_targets(targets, data)
    save(fig, ["fasteners::postgres_lock", "raw libpq on one connection", "psycopg2"],
         args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
