"""Per-round results of `synth rounds`, read back from the stage markers: a table and a plot."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from synth.journal import Journal
from synth.train.stages import read_marker

STAGES = ("generate", "sft_data", "label", "prm", "sft", "eval_greedy", "eval_search")
ONE_POOL = {"eval": ("eval_greedy", "eval_search")}


def pool_metrics(round_dir: Path, greedy_stage: str, search_stage: str) -> dict[str, Any]:
    """One eval pool's numbers in a round: greedy accuracy (and which problems it got right), the search's."""
    greedy, search = (((read_marker(round_dir / s) or {}).get("result") or {}) for s in (greedy_stage, search_stage))
    n = search.get("n")
    selector = "weighted" if f"weighted@{n}" in search else "maj"
    rows = Journal(round_dir / greedy_stage / "rows.jsonl").read() if greedy else []
    return {
        "greedy": greedy.get("pass@1"),
        "n": n,
        "maj": search.get(f"maj@{n}"),
        "pass": search.get(f"pass@{n}"),
        "search": search.get(f"{selector}@{n}"),
        "search_selector": selector,
        "problems": len(rows) or None,
        "correct": {r["id"]: int(bool(r["verified"][0])) for r in rows if r.get("verified")},
        "tokens": (greedy.get("tokens") or 0) + (search.get("tokens") or 0),
    }


def round_summary(round_dir: Path, k: int, pools: dict[str, tuple[str, str]] = ONE_POOL) -> dict[str, Any]:
    """Metrics of round k from its finished stages (missing stages give None); `pools` maps each eval pool's
    name to its (greedy, search) stage dirs; the top-level numbers are the first pool's."""
    eval_stages = [s for pair in pools.values() for s in pair]
    done = {s: read_marker(round_dir / s) for s in (*STAGES[:5], *eval_stages)}
    res = {s: (m or {}).get("result", {}) for s, m in done.items()}
    per_pool = {name: pool_metrics(round_dir, *stages) for name, stages in pools.items()}
    main = next(iter(per_pool.values()))
    tokens = (res["generate"].get("tokens", 0) or 0) + sum(p["tokens"] for p in per_pool.values())
    tokens += res["label"].get("new_rollout_tokens", 0) or 0
    wall = {s: m["wall_s"] for s, m in done.items() if m and s in STAGES[:5]}
    for kind, i in (("eval_greedy", 0), ("eval_search", 1)):  # eval time summed over the pools
        times = [done[stages[i]]["wall_s"] for stages in pools.values() if done[stages[i]]]
        if times:
            wall[kind] = round(sum(times), 1)
    return {
        "round": k,
        **{key: main[key] for key in ("greedy", "n", "maj", "pass", "search", "search_selector")},
        "train_pass@1": res["generate"].get("pass@1"),
        "sft_examples": res["sft_data"].get("examples"),
        "sft_train_loss": res["sft"].get("train_loss"),
        "sft_eval_loss": res["sft"].get("eval_loss"),
        "tokens": tokens,
        "wall_s": wall,
        "policy": res["sft"].get("model"),
        "prm": res["prm"].get("prm"),
        "pools": per_pool,
    }


def paired_delta(after: dict[str, int], before: dict[str, int]) -> tuple[float, float] | None:
    """Mean per-problem gain on the problems both evaluations share, and its paired standard error."""
    ids = sorted(set(after) & set(before))
    if len(ids) < 2:
        return None
    d = [after[i] - before[i] for i in ids]
    mean = sum(d) / len(d)
    var = sum((x - mean) ** 2 for x in d) / (len(d) - 1)
    return mean, math.sqrt(var / len(d))


def select_round(rows: list[dict[str, Any]], pool: str | None, base_model: str, base_prm: str | None) -> dict:
    """The output of the run: the round with the best greedy accuracy on `pool` (the earliest of ties, so an
    equal later round does not replace it), or the last finished round when no pool is named."""
    policy, prm, models = base_model, base_prm, []
    for r in rows:  # the policy and PRM each round evaluated
        policy, prm = r["policy"] or policy, r["prm"] or prm
        models.append((policy, prm))
    scored = [(r, m) for r, m in zip(rows, models) if pool is None or r["pools"][pool]["greedy"] is not None]
    if not scored:
        return {"round": None, "policy": base_model, "prm": base_prm, "pool": pool}
    if pool is None:
        row, (policy, prm) = scored[-1]
    else:
        row, (policy, prm) = max(scored, key=lambda x: (x[0]["pools"][pool]["greedy"], -x[0]["round"]))
    greedy = row["pools"][pool]["greedy"] if pool else row["greedy"]
    return {"round": row["round"], "policy": policy, "prm": prm, "pool": pool, "greedy": greedy}


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


def pools_table(rows: list[dict[str, Any]]) -> str:
    """Greedy accuracy per eval pool and round, with the paired gain over round 0 (± SE), and the search's."""
    names = list(rows[0]["pools"])
    head = ["round"] + [
        f"{name} ({rows[0]['pools'][name]['problems'] or '?'}): greedy, vs round 0, search" for name in names
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    base = rows[0]["pools"] if rows[0]["round"] == 0 else None
    for r in rows:
        cells = [str(r["round"])]
        for name in names:
            p = r["pools"][name]
            delta = paired_delta(p["correct"], base[name]["correct"]) if base and r["round"] else None
            gain = f"{delta[0]:+.3f} ± {delta[1]:.3f}" if delta else "-"
            cells.append(f"{_f(p['greedy'])}, {gain}, {_f(p['search'])}")
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
    names = list(rows[0].get("pools") or ["eval"])
    series = {"greedy": "greedy", "maj": f"maj@{n}", "pass": f"pass@{n}"}
    if any(r["search_selector"] == "weighted" for r in rows):
        series["search"] = f"search@{n} (PRM-weighted where a PRM was used)"
    for key, name in series.items():
        pts = [(r["round"], r[key]) for r in rows if r[key] is not None]
        if pts:
            label = f"{names[0]}: {name}" if len(names) > 1 else name
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    for pool in names[1:]:
        pts = [(r["round"], r["pools"][pool]["greedy"]) for r in rows if r["pools"][pool]["greedy"] is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="s", linestyle="--", label=f"{pool}: greedy")
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


def write_report(out: Path, rows: list[dict[str, Any]], title: str, selected: dict | None = None) -> str:
    """report.md + rounds.png + rounds.json in `out`; returns the markdown."""
    delta = greedy_delta(rows)
    names = list(rows[0].get("pools") or ["eval"])
    main = f"Eval pool `{names[0]}`:\n\n" if len(names) > 1 else ""
    pools = f"Every eval pool:\n\n{pools_table(rows)}\n\n" if len(names) > 1 else ""
    chosen = ""
    if selected and selected.get("round") is not None:
        why = f"best greedy accuracy on `{selected['pool']}`" if selected["pool"] else "the last round"
        chosen = f"Output policy: round {selected['round']} ({why}): `{selected['policy']}`\n\n"
    text = (
        f"# {title}\n\n{main}{table(rows)}\n\n"
        + (f"Held-out greedy accuracy, last round - round 0: {delta:+.3f}\n\n" if delta is not None else "")
        + pools
        + chosen
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
