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
        labels.append("1.25x and 2x raw median (beside the targets)")
    ax.legend(handles=handles, labels=labels, fontsize=7, loc="center right")
    rounds = data["settings"]["handoff_rounds"]
    ax.set_title(f"1. Hand-off latency ({rounds} rounds)", fontsize=10)


def plot_same_cpu(ax, data):
    rows = [r for r in ran(data.get("same_cpu_handoff", [])) if r["round_ratio"]["count"]]
    if not rows:
        ax.axis("off")
        ax.set_title("1b. Same-CPU hand-off: not measured", fontsize=10)
        return
    positions = list(range(len(rows)))
    medians = [r["round_ratio"]["median"] for r in rows]
    spread = [[m - r["round_ratio"]["p10"] for m, r in zip(medians, rows)],
              [r["round_ratio"]["p90"] - m for m, r in zip(medians, rows)]]
    ax.barh(positions, medians, xerr=spread, color=[colour(r["key"]) for r in rows],
            error_kw={"ecolor": "#555555", "capsize": 3, "linewidth": 0.8})
    row_axis(ax, positions, [r["label"] for r in rows],
             "median of per-round latency / raw F_OFD_SETLKW's (whiskers: p10..p90)")
    for p, v in zip(positions, medians):
        ax.annotate(f" {v:.2f}x", (v, p), va="center", fontsize=7)
    for factor in (1.25, 2):
        ax.axvline(factor, color=FAIL, linestyle="--", linewidth=0.8)
    cpu = rows[0].get("cpu", "?")
    ax.set_title(f"1b. Same-CPU hand-off on CPU {cpu} (targets: 1.25x lock(), 2x try_lock_for())",
                 fontsize=10)


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
    for key, text in (("raw_pair", "raw pair"), ("raw_open_pair_close", "raw open+pair+close")):
        raw = next((r["ns_per_pair"] for r in rows if r["key"] == key), None)
        if raw:
            ax.axvline(1.15 * raw, color=FAIL, linestyle="--", linewidth=1)
            ax.annotate(f" 1.15x {text}", (1.15 * raw, len(rows) - 0.5), color=FAIL, fontsize=7)
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
    row_axis(ax, positions, labels, "µs late (log); target: p99 within plain sleep's + 0.5 ms",
             log=True)
    sleep = next((r["lateness_ns"]["p99"] for r in rows if r["key"] == "plain_sleep"), None)
    if sleep is not None:
        ax.axvline(max(sleep + 500e3, 1) / 1e3, color=FAIL, linestyle="--", linewidth=1)
    ax.legend(fontsize=7, loc="center right")
    timeout_ms = data["settings"]["accuracy_timeout_ns"] / 1e6
    ax.set_title(f"5. Lateness of a {timeout_ms:g} ms timed wait", fontsize=10)


def plot_targets(ax, data):
    targets = data["targets"]
    targets_panel(ax, "Speed targets, against the raw baseline of this run", targets, 0.05,
                  (0.5, 0), 7, min(0.115, 1.0 / max(len(targets), 1)))


def main():
    args, data = read_results(__doc__, "fasteners_bench", "docs/benchmark.png")

    m = data["machine"]
    v = data["versions"]
    fig = plt.figure(figsize=(14, 19))
    grid = fig.add_gridspec(4, 2, height_ratios=(1, 1, 1, 0.8))
    panels = [fig.add_subplot(grid[row, col]) for row in range(3) for col in range(2)]
    fig.suptitle(
        f"fasteners {v['fasteners']} benchmark on {m['cpu']}, {m['cores']} cores, {m['kernel']}\n"
        f"{m['date']}; {m['build']}; load average before {m['load_before']}; "
        f"peers: Boost {v['boost'] or 'n/a'}, python-fasteners {v['python_fasteners'] or 'n/a'}",
        fontsize=11)
    for ax, draw in zip(panels, (plot_handoff, plot_cpu, plot_same_cpu, plot_uncontended,
                                 plot_throughput, plot_timeout)):
        draw(ax, data)
    plot_targets(fig.add_subplot(grid[3, :]), data)
    save(fig, ["fasteners (this library)", "raw fcntl baseline", "peers"], args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
