"""PRM evaluation: step-level AUROC, and ProcessBench-style first-error F1."""

from __future__ import annotations

from synth.formats import hard_label_column, soft_label_column
from synth.prm.scorer import PRM


def family(source: str | None) -> str | None:
    """The task family of a problem's source: 'reasoning_gym/chain_sum' -> 'chain_sum'."""
    return source.rsplit("/", 1)[-1] if source else None


def step_auroc(prm: PRM, ds, batch: int = 64) -> dict:
    """AUROC of step scores against binary step labels (the hard labels, or soft labels >= 0.5).

    Besides the pooled AUROC, reports it *within problems* (pairs of a good and a bad step of the same
    problem) for all steps, for partial steps (not a trace's last) and for final steps. Tree search
    ranks siblings of one problem, so that is the number it depends on: a PRM can reach a good pooled
    AUROC by recognising easy problems alone. With a `source` column holding more than one task family,
    `families` has the same numbers per family.
    """
    truth_key = hard_label_column(ds.column_names)
    group_key = "problem_id" if "problem_id" in ds.column_names else "prompt"
    has_source = "source" in ds.column_names
    steps: list[tuple[float, bool, str, bool, str | None]] = []  # score, truth, problem, final, family
    for start in range(0, len(ds), batch):
        rows = ds[start : start + batch]
        out = prm.score(rows["prompt"], rows["completions"])
        sources = rows["source"] if has_source else [None] * len(out)
        for s, labels, group, source in zip(out, rows[truth_key], rows[group_key], sources):
            steps += [
                (x, float(t) >= 0.5, group, i == len(s) - 1, family(source)) for i, (x, t) in enumerate(zip(s, labels))
            ]
    result = auroc_metrics(steps)
    families = sorted({f for *_, f in steps if f is not None})
    if len(families) > 1:
        result["families"] = {f: auroc_metrics([x for x in steps if x[4] == f]) for f in families}
    return result


def auroc_metrics(steps: list[tuple]) -> dict[str, float]:
    """Pooled and within-problem AUROC (all, partial, final steps) of (score, truth, problem, final, ...) rows."""
    from sklearn.metrics import roc_auc_score

    scores, truths = [x[0] for x in steps], [x[1] for x in steps]
    positives = sum(truths)
    result = {"eval_steps": len(truths), "eval_positive_rate": positives / max(len(truths), 1)}
    result["step_auroc"] = roc_auc_score(truths, scores) if 0 < positives < len(truths) else float("nan")
    for name, keep in (("", None), ("_partial", False), ("_final", True)):
        part = [x for x in steps if keep is None or x[3] == keep]
        auc, pairs = within_group_auroc([x[2] for x in part], [x[0] for x in part], [x[1] for x in part])
        result[f"within_problem_auroc{name}"], result[f"within_problem_pairs{name}"] = auc, pairs
    return result


def within_group_auroc(groups: list, scores: list[float], truths: list[bool]) -> tuple[float, int]:
    """AUROC over (positive, negative) pairs from the same group (ties count half), and the pair count."""
    by_group: dict = {}
    for g, s, t in zip(groups, scores, truths):
        by_group.setdefault(g, ([], []))[0 if t else 1].append(s)
    wins, pairs = 0.0, 0
    for pos, neg in by_group.values():
        for a in pos:
            for b in neg:
                wins += 1.0 if a > b else 0.5 if a == b else 0.0
        pairs += len(pos) * len(neg)
    return (wins / pairs if pairs else float("nan")), pairs


def within_problem_value_spread(rows: list[dict]) -> dict[str, float]:
    """How much the true values of one problem's steps differ: the standard deviation of Monte-Carlo
    step labels within a problem, with the rollout noise removed (a soft label l from K rollouts has
    binomial variance l(1-l)/(K-1), unbiased), for partial steps and, from their 0/1 labels, final steps.
    Near 0 for partial steps means no PRM, however good, can gain much by ranking them.
    Rows: `synth label` output (`problem_id`, soft labels, `rollouts`)."""
    import statistics

    partial: dict[str, list[tuple[float, int]]] = {}
    final: dict[str, list[float]] = {}
    soft = soft_label_column(rows[0] if rows else ())
    for r in rows:
        for label in r[soft][:-1]:
            partial.setdefault(r["problem_id"], []).append((float(label), int(r["rollouts"])))
        final.setdefault(r["problem_id"], []).append(float(r[soft][-1]))

    def spread(groups: list[list[tuple[float, int]]]) -> tuple[float, int]:
        groups = [g for g in groups if len(g) >= 2]
        if not groups:
            return float("nan"), 0
        observed = statistics.fmean(statistics.variance([v for v, _ in g]) for g in groups)
        noise = statistics.fmean(
            statistics.fmean(v * (1 - v) / (k - 1) if k > 1 else 0.0 for v, k in g) for g in groups
        )
        return max(observed - noise, 0.0) ** 0.5, len(groups)

    partial_sd, partial_problems = spread(list(partial.values()))
    final_sd, final_problems = spread([[(v, 0) for v in g] for g in final.values()])
    return {
        "partial_sd": partial_sd,
        "partial_problems": partial_problems,
        "final_sd": final_sd,
        "final_problems": final_problems,
    }


def first_error(scores: list[float], threshold: float = 0.5) -> int:
    """Index of the first step scored below threshold, -1 if none."""
    return next((i for i, s in enumerate(scores) if s < threshold), -1)


def first_error_f1(prm: PRM, ds, threshold: float = 0.5, label_column: str = "label") -> dict[str, float]:
    """ProcessBench: `label` is the first wrong step's index (-1: all correct). F1 is the harmonic mean
    of the accuracy on erroneous solutions and on correct ones."""
    predicted = []
    for start in range(0, len(ds), 64):
        rows = ds[start : start + 64]
        predicted += [first_error(s, threshold) for s in prm.score(rows["prompt"], rows["completions"])]
    truth = list(ds[label_column])
    err = [p == t for p, t in zip(predicted, truth) if t != -1]
    ok = [p == t for p, t in zip(predicted, truth) if t == -1]
    acc_err = sum(err) / len(err) if err else float("nan")
    acc_ok = sum(ok) / len(ok) if ok else float("nan")
    f1 = 2 * acc_err * acc_ok / (acc_err + acc_ok) if err and ok and acc_err + acc_ok > 0 else 0.0
    return {"error_accuracy": acc_err, "correct_accuracy": acc_ok, "first_error_f1": f1}
