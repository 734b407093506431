"""Before and after: two ``bench.run`` results side by side, as a Markdown table and a
chart of each scenario's ratio (ours / its same-run baseline) in each.

    python -m bench.compare BEFORE.json AFTER.json [--out bench/results/before-after]

Each ratio comes from its own run, against a baseline measured in that run, so the two
columns are comparable even though the machine's load differed between the runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _rows(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    payload = json.loads(path.read_text())
    return {(r["scenario"], r["metric"]): r for r in payload["results"]}


def _fmt(value: float | None) -> str:
    if value is None or value != value:  # missing or NaN
        return "-"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--out", type=Path, default=Path("bench/results/before-after"))
    args = parser.parse_args()
    before, after = _rows(args.before), _rows(args.after)
    keys = list(after) + [k for k in before if k not in after]
    lines = [
        "| id | metric | unit | before: ours / baseline | ratio | after: ours / baseline "
        "| ratio | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key in keys:
        b, a = before.get(key), after.get(key)
        row = a or b
        assert row is not None
        lines.append(
            f"| {key[0]} | {key[1]} | {row['unit']} "
            f"| {_fmt(b and b['ours_p50'])} / {_fmt(b and b['baseline_p50'])} "
            f"| {_fmt(b and b['ratio'])} "
            f"| {_fmt(a and a['ours_p50'])} / {_fmt(a and a['baseline_p50'])} "
            f"| {_fmt(a and a['ratio'])} | {row['target']} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    _chart(keys, before, after, args.out.with_suffix(".png"))


def _chart(
    keys: list[tuple[str, str]],
    before: dict[tuple[str, str], dict[str, Any]],
    after: dict[tuple[str, str], dict[str, Any]],
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def ratio(rows: dict[tuple[str, str], dict[str, Any]], key: tuple[str, str]) -> float:
        r = rows.get(key)
        value = r["ratio"] if r else float("nan")
        return value if value == value and value > 0 else float("nan")

    shown = [
        k
        for k in keys
        if ratio(after, k) == ratio(after, k) or ratio(before, k) == ratio(before, k)
    ]
    fig, ax = plt.subplots(figsize=(11, 0.6 + 0.45 * len(shown)))
    ys = range(len(shown))
    ax.barh(
        [y - 0.2 for y in ys],
        [ratio(before, k) for k in shown],
        height=0.4,
        label="before",
        color="tab:gray",
    )
    ax.barh(
        [y + 0.2 for y in ys],
        [ratio(after, k) for k in shown],
        height=0.4,
        label="after",
        color="tab:green",
    )
    ax.set_yticks(list(ys), [f"{k[0]} {k[1][:44]}" for k in shown], fontsize=8)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("ours / same-run baseline (p50); see the table for which way is better")
    ax.invert_yaxis()
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
