"""Shared by plot.py and postgres_plot.py: the backend, the colours and what both draw alike."""

import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the non-interactive backend)

OURS = "#1f77b4"
RAW = "#7f7f7f"
PEER = "#ff7f0e"
PASS = "#2ca02c"
FAIL = "#d62728"


def colour(key):
    if key.startswith("fasteners"):
        return OURS
    if key.startswith("raw") or key == "plain_sleep":
        return RAW
    return PEER


def ran(rows):
    return [r for r in rows if r.get("ran")]


def read_results(description, program, example):
    """The command line (JSON file, picture) and the results the JSON file holds."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("json", help=f"the file {program} --json wrote")
    parser.add_argument("output", help=f"the picture to write, e.g. {example}")
    args = parser.parse_args()
    with open(args.json, encoding="utf-8") as f:
        return args, json.load(f)


def row_axis(ax, positions, labels, xlabel, log=False):
    """One bar per row, top to bottom, labelled; the x axis logarithmic if `log`."""
    ax.set_yticks(positions)
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel, fontsize=8)
    ax.tick_params(axis="x", labelsize=8)


def targets_panel(ax, title, targets, name_x, figure_at, figure_size, step):
    """Each target's verdict, name and figure (at x, y + dy: `figure_at`), `step` apart."""
    ax.axis("off")
    ax.set_title(title, fontsize=10)
    y = 1.0
    for target in targets:
        verdict = "n/a" if not target["evaluated"] else ("PASS" if target["pass"] else "FAIL")
        shade = RAW if verdict == "n/a" else (PASS if verdict == "PASS" else FAIL)
        ax.text(0.0, y, verdict, color=shade, fontsize=8, fontweight="bold",
                transform=ax.transAxes, va="top")
        ax.text(name_x, y, target["name"], fontsize=7.5, transform=ax.transAxes, va="top")
        figure = ("beside the targets: " if target.get("extra") else "") + target["figure"]
        ax.text(figure_at[0], y + figure_at[1], figure, fontsize=figure_size, color="#555555",
                transform=ax.transAxes, va="top")
        y -= step


def save(fig, labels, output):
    """The legend of the three colours (`labels`: ours, raw, peers), then the picture."""
    fig.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=c) for c in (OURS, RAW, PEER)],
               labels=labels, loc="lower center", ncol=3, fontsize=9)
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    fig.savefig(output, dpi=110)
