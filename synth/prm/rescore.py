"""Score the completions of an existing `synth generate` run with another PRM.

Best-of-N samples do not depend on the PRM, so comparing PRMs on the same samples needs no new
generation: every completion's steps are rescored and the PRM-based picks (naive, weighted) redone.
"""

from __future__ import annotations

from synth.evaluate import row_traces, select_answers
from synth.prm.scorer import PRM, Aggregation, aggregate
from synth.steps import StepRule


def rescore_rows(
    rows: list[dict], prm: PRM, aggregation: Aggregation = "last", steps: StepRule | None = None
) -> list[dict]:
    """Copies of best-of-N rows with `step_scores`, `scores` and the naive / weighted picks from `prm`.

    The rows' own steps are scored, or, with `steps`, each completion cut again by that rule (a PRM
    trained on sentence steps scores sentences)."""
    flat = [(r, k) for r in rows for k in range(len(r["completions"]))]
    cut = [steps.steps(r["completions"][k]) if steps else r["steps"][k] for r, k in flat]
    step_scores = prm.score(
        [r["problem"] for r, _ in flat], [s or [r["completions"][k]] for s, (r, k) in zip(cut, flat)]
    )
    out, at = [], 0
    for r in rows:
        n = len(r["completions"])
        new = dict(
            r,
            step_scores=step_scores[at : at + n],
            scores=[aggregate(s, aggregation) for s in step_scores[at : at + n]],
        )
        if steps:
            new["steps"] = cut[at : at + n]
        at += n
        picks = select_answers(row_traces(new))
        for how in ("naive", "weighted"):
            i = picks.get(how)
            new[f"{how}_answer"] = r["answers"][i] if i is not None else None
            new[f"{how}_verified"] = bool(r["verified"][i]) if i is not None else False
        out.append(new)
    return out
