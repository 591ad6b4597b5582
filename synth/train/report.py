"""Per-round results of `synth rounds`, read back from the stage markers: a table and a plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from synth.train.stages import read_marker

STAGES = ("generate", "sft_data", "label", "prm", "sft", "eval_greedy", "eval_search")


def round_summary(round_dir: Path, k: int) -> dict[str, Any]:
    """Metrics of round k from its finished stages (missing stages give None)."""
    done = {s: read_marker(round_dir / s) for s in STAGES}
    res = {s: (m or {}).get("result", {}) for s, m in done.items()}
    search = res["eval_search"]
    n = search.get("n")
    selector = "weighted" if f"weighted@{n}" in search else "maj"
    tokens = sum(res[s].get("tokens", 0) or 0 for s in ("generate", "eval_greedy", "eval_search"))
    tokens += res["label"].get("new_rollout_tokens", 0) or 0
    return {
        "round": k,
        "greedy": res["eval_greedy"].get("pass@1"),
        "n": n,
        "maj": search.get(f"maj@{n}"),
        "pass": search.get(f"pass@{n}"),
        "search": search.get(f"{selector}@{n}"),
        "search_selector": selector,
        "train_pass@1": res["generate"].get("pass@1"),
        "sft_examples": res["sft_data"].get("examples"),
        "sft_train_loss": res["sft"].get("train_loss"),
        "sft_eval_loss": res["sft"].get("eval_loss"),
        "tokens": tokens,
        "wall_s": {s: m["wall_s"] for s, m in done.items() if m},
        "policy": res["sft"].get("model"),
        "prm": res["prm"].get("prm"),
    }


def _f(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def table(rows: list[dict[str, Any]]) -> str:
    n = next((r["n"] for r in rows if r["n"]), "N")
    stages = [s for s in STAGES if any(s in r["wall_s"] for r in rows)]
    head = (
        [
            "round",
            "greedy acc",
            f"maj@{n}",
            f"pass@{n}",
            "search acc (selector)",
            "train pass@1",
            "SFT examples",
            "SFT loss train/eval",
            "tokens generated",
        ]
        + [f"{s} s" for s in stages]
        + ["total s"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        loss = "-" if r["sft_train_loss"] is None else f"{_f(r['sft_train_loss'])}/{_f(r['sft_eval_loss'])}"
        cells = [
            str(r["round"]),
            _f(r["greedy"]),
            _f(r["maj"]),
            _f(r["pass"]),
            _f(r["search"]) + (f" ({r['search_selector']})" if r["search"] is not None else ""),
            _f(r["train_pass@1"]),
            _f(r["sft_examples"]),
            loss,
            str(r["tokens"]),
        ]
        cells += [_f(r["wall_s"].get(s), 1) for s in stages] + [_f(float(sum(r["wall_s"].values())), 1)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def greedy_delta(rows: list[dict[str, Any]]) -> float | None:
    """Held-out greedy accuracy of the last round minus round 0."""
    done = [r for r in rows if r["greedy"] is not None]
    if len(done) < 2 or done[0]["round"] != 0:
        return None
    return done[-1]["greedy"] - done[0]["greedy"]


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = next((r["n"] for r in rows if r["n"]), "N")
    fig, ax = plt.subplots(figsize=(6.5, 4))
    series = {"greedy": "greedy", "maj": f"maj@{n}", "pass": f"pass@{n}"}
    if any(r["search_selector"] == "weighted" for r in rows):
        series["search"] = f"search@{n} (PRM-weighted where a PRM was used)"
    for key, name in series.items():
        pts = [(r["round"], r[key]) for r in rows if r[key] is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set_xticks([r["round"] for r in rows])
    ax.set_xlabel("round (0 = base model)")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1)
    ax.set_title("self-improvement rounds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(out: Path, rows: list[dict[str, Any]], title: str) -> str:
    """report.md + rounds.png + rounds.json in `out`; returns the markdown."""
    delta = greedy_delta(rows)
    text = (
        f"# {title}\n\n{table(rows)}\n\n"
        + (f"Held-out greedy accuracy, last round - round 0: {delta:+.3f}\n\n" if delta is not None else "")
        + "![accuracy per round](rounds.png)\n"
    )
    plot(rows, out / "rounds.png")
    (out / "rounds.json").write_text(json.dumps(rows, indent=2))
    (out / "report.md").write_text(text)
    return text


REPORT_HEADING = "## Rounds report"


def add_report_to_card(card: Path, report: str) -> None:
    """Put the rounds report (table, greedy delta) into a dataset card, replacing an earlier one."""
    text = card.read_text()
    text = text.split("\n" + REPORT_HEADING + "\n")[0].rstrip("\n")
    body = "\n".join(
        line for line in report.splitlines()[1:] if not line.startswith("![")
    ).strip()  # no title, no image
    card.write_text(f"{text}\n\n{REPORT_HEADING}\n\n{body}\n")
