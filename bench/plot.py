#!/usr/bin/env python3
"""Turns fasteners_bench --json output into a picture (PNG or SVG, by the output's extension)."""

import sys

from plot_common import FAIL, OURS, colour, plt, ran, read_results, row_axis, save, targets_panel


def horizontal_bars(ax, labels, values, colours, unit, log=True):
    positions = range(len(labels))
    ax.barh(positions, values, color=colours)
    row_axis(ax, list(positions), labels, unit, log)
    for y, v in zip(positions, values):
        ax.annotate(f" {format_value(v, unit)}", (v, y), va="center", fontsize=7)


def format_value(v, unit):
    if unit == "µs":
        return f"{v:.3g} µs" if v < 1000 else f"{v / 1000:.3g} ms"
    if unit == "% of wall time":
        return f"{v:.2g}%"
    if unit == "ns per pair":
        return f"{v:.0f} ns"
    if unit == "increments / s":
        return f"{v / 1000:.0f}k/s"
    return f"{v:.3g}"


def plot_handoff(ax, data):
    rows = ran(data["handoff"])
    labels = [r["label"] for r in rows]
    medians = [r["latency_ns"]["median"] / 1e3 for r in rows]
    p99s = [r["latency_ns"]["p99"] / 1e3 for r in rows]
    positions = list(range(len(rows)))
    ax.barh([p + 0.2 for p in positions], p99s, height=0.4, color="#c7c7c7", label="p99")
    ax.barh([p - 0.2 for p in positions], medians, height=0.4,
            color=[colour(r["key"]) for r in rows], label="median")
    row_axis(ax, positions, labels, "µs from A's release call to B holding the lock (log)",
             log=True)
    for p, v in zip(positions, medians):
        ax.annotate(f" {format_value(v, 'µs')}", (v, p - 0.2), va="center", fontsize=7)
    raw = next((r["latency_ns"]["median"] / 1e3 for r in rows if r["key"] == "raw_ofd"), None)
    handles = [plt.Rectangle((0, 0), 1, 1, color=OURS), plt.Rectangle((0, 0), 1, 1, color="#c7c7c7")]
    labels = ["median", "p99"]
    if raw:
        for factor in (1.25, 2):
            ax.axvline(factor * raw, color=FAIL, linestyle="--", linewidth=0.8)
        handles.append(plt.Line2D([], [], color=FAIL, linestyle="--", linewidth=0.8))
        labels.append("targets: 1.25x and 2x raw median")
    ax.legend(handles=handles, labels=labels, fontsize=7, loc="center right")
    rounds = data["settings"]["handoff_rounds"]
    ax.set_title(f"1. Hand-off latency ({rounds} rounds)", fontsize=10)


def plot_cpu(ax, data):
    rows = ran(data["handoff"])
    horizontal_bars(ax, [r["label"] for r in rows], [100 * r["cpu_fraction"] for r in rows],
                    [colour(r["key"]) for r in rows], "% of wall time")
    ax.axvline(2, color=FAIL, linestyle="--", linewidth=1)
    ax.set_title("2. Waiter CPU while waiting (target: 2%)", fontsize=10)


def plot_uncontended(ax, data):
    rows = ran(data["uncontended"])
    horizontal_bars(ax, [r["label"] for r in rows], [r["ns_per_pair"] for r in rows],
                    [colour(r["key"]) for r in rows], "ns per pair", log=False)
    raw = next((r["ns_per_pair"] for r in rows if r["key"] == "raw_pair"), None)
    if raw:
        ax.axvline(1.2 * raw, color=FAIL, linestyle="--", linewidth=1)
        ax.annotate(" 1.2x raw pair", (1.2 * raw, len(rows) - 0.5), color=FAIL, fontsize=7)
    opened = next((r["ns_per_pair"] for r in rows if r["key"] == "raw_open_pair_close"), None)
    if opened:
        ax.axvline(1.1 * opened, color=FAIL, linestyle="--", linewidth=1)
        ax.annotate(" 1.1x raw open+pair+close", (1.1 * opened, len(rows) - 0.5), color=FAIL,
                    fontsize=7)
    ax.set_title("3. Uncontended acquire+release", fontsize=10)


def plot_throughput(ax, data):
    rows = ran(data["throughput"])
    horizontal_bars(ax, [r["label"] for r in rows], [r["per_second"] for r in rows],
                    [colour(r["key"]) for r in rows], "increments / s", log=False)
    lost = sum(r["lost"] for r in rows)
    s = data["settings"]
    ax.set_title(f"4. Throughput, {s['processes']} processes ({lost} lost updates)", fontsize=10)


def plot_timeout(ax, data):
    rows = ran(data["timeout"])
    labels = [r["label"] for r in rows]
    positions = list(range(len(rows)))
    width = 0.27
    for offset, stat, shade in ((-width, "median", None), (0, "p99", "#9edae5"),
                                (width, "max", "#c7c7c7")):
        values = [max(r["lateness_ns"][stat], 1) / 1e3 for r in rows]
        colours = [colour(r["key"]) for r in rows] if shade is None else shade
        ax.barh([p + offset for p in positions], values, height=width, color=colours, label=stat)
    row_axis(ax, positions, labels, "µs late (log); target: p99 within 1 ms", log=True)
    ax.axvline(1000, color=FAIL, linestyle="--", linewidth=1)
    ax.legend(fontsize=7, loc="center right")
    timeout_ms = data["settings"]["accuracy_timeout_ns"] / 1e6
    ax.set_title(f"5. Lateness of a {timeout_ms:g} ms timed wait", fontsize=10)


def plot_targets(ax, data):
    targets = data["targets"]
    targets_panel(ax, "Speed targets, against the raw baseline of this run", targets, 0.1,
                  (0.1, -0.035), 6.5, min(0.115, 1.0 / max(len(targets), 1)))


def main():
    args, data = read_results(__doc__, "fasteners_bench", "docs/benchmark.png")

    m = data["machine"]
    v = data["versions"]
    fig, axes = plt.subplots(3, 2, figsize=(14, 14.5))
    fig.suptitle(
        f"fasteners {v['fasteners']} benchmark on {m['cpu']}, {m['cores']} cores, {m['kernel']}\n"
        f"{m['date']}; {m['build']}; load average before {m['load_before']}; "
        f"peers: Boost {v['boost'] or 'n/a'}, python-fasteners {v['python_fasteners'] or 'n/a'}",
        fontsize=11)
    plot_handoff(axes[0][0], data)
    plot_cpu(axes[0][1], data)
    plot_uncontended(axes[1][0], data)
    plot_throughput(axes[1][1], data)
    plot_timeout(axes[2][0], data)
    plot_targets(axes[2][1], data)
    save(fig, ["fasteners (this library)", "raw fcntl baseline", "peers"], args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
