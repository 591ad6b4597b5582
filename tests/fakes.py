"""Deterministic stand-ins for the policy, for search and pipeline logic tests."""

from __future__ import annotations

from synth.generate.engine import Continuation, SamplingParams


class FakeEngine:
    """What every policy engine offers besides generation: its context length and a token count."""

    max_model_len = 8192

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def new_search(self) -> None:
        pass


class AnswerPolicy(FakeEngine):
    """Answers correctly on the samples whose index is in `correct`, wrongly on the others.

    `answers` maps a problem text to its gold answer. `interrupt_after` raises KeyboardInterrupt
    on that call (0-based), to simulate Ctrl-C in the middle of a run.
    """

    def __init__(self, answers: dict[str, str], correct=(0,), interrupt_after: int | None = None):
        self.answers, self.correct, self.interrupt_after = answers, set(correct), interrupt_after
        self.calls = 0
        self.prompts_seen: list[str] = []

    def chat_prompt(self, problem: str) -> str:
        return problem

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Continuation]]:
        if self.interrupt_after is not None and self.calls == self.interrupt_after:
            raise KeyboardInterrupt
        self.calls += 1
        self.prompts_seen.extend(prompts)
        out = []
        for p in prompts:
            gold = self.answers[p]
            samples = []
            for i in range(params.n):
                ans = gold if i in self.correct else f"{gold}1"
                text = f"Let us compute.\n\nIt gives {ans}.\n\nThe answer is $\\boxed{{{ans}}}$."
                samples.append(Continuation(text, 10 + i, "eos"))
            out.append(samples)
        return out


class StepPolicy(FakeEngine):
    """Writes step `d{depth}s{i}` for sample i at depth `depth`; after `finish_depth` steps it ends (EOS)
    with a boxed answer: the gold `answer` for samples in `correct`, a wrong one otherwise."""

    def __init__(self, finish_depth: int = 3, answer: str = "7", correct=(0,), delimiter: str = "\n\n"):
        self.finish_depth, self.answer, self.correct, self.delimiter = finish_depth, answer, set(correct), delimiter
        self.calls: list[tuple[int, int]] = []  # (prompts, n) per call

    def chat_prompt(self, problem: str) -> str:
        return f"Q: {problem}\nA: "

    def generate(self, prompts, params):
        self.calls.append((len(prompts), params.n))
        out = []
        for p in prompts:
            depth = p.count(self.delimiter)
            samples = []
            for i in range(params.n):
                if not params.stop:  # no step stop: write steps until one ends the completion
                    steps = [self._step(depth, i, p)]
                    while steps[-1].stop_reason != "eos":
                        steps.append(self._step(depth + len(steps), i, p))
                    samples.append(
                        Continuation(
                            self.delimiter.join(c.text for c in steps), sum(c.num_tokens for c in steps), "eos", len(p)
                        )
                    )
                else:
                    samples.append(self._step(depth, i, p))
            out.append(samples)
        return out

    def _step(self, depth: int, i: int, prompt: str) -> Continuation:
        if depth + 1 >= self.finish_depth:
            ans = self.answer if i in self.correct else "9"
            return Continuation(f"d{depth}s{i} so \\boxed{{{ans}}}", 3, "eos", len(prompt))
        return Continuation(f"d{depth}s{i}", 2, "stop", len(prompt))


class StepPRM:
    """Scores a step `d{d}s{i}` as 1 - i/10 (sample 0 is best); other steps 0.5. Counts calls."""

    def __init__(self):
        self.batches: list[int] = []

    def score(self, problems, steps):
        self.batches.append(len(steps))
        out = []
        for path in steps:
            scores = []
            for s in path:
                try:
                    i = int(s.split("s", 1)[1].split()[0].rstrip("."))
                    scores.append(1 - i / 10)
                except (IndexError, ValueError):
                    scores.append(0.5)
            out.append(scores)
        return out


# ---------------------------------------------------------------- engines for Ray workers (module-level: importable there)


def answer_engines(cfg):
    """A worker's engines for `generate(..., worker_setup=...)`: an AnswerPolicy over the run's pool."""
    from synth.problems import load_pool

    return AnswerPolicy({p.problem: p.answer for p in load_pool(cfg.pool)}, correct=(0, 2)), None


class DyingPolicy(AnswerPolicy):
    """Kills its own process (kill -9, as an OOM killer would) the first time it sees `victim`'s problem:
    the marker file in $SYNTH_TEST_DIE_DIR makes the retry go through."""

    def __init__(self, answers, victim: str):
        super().__init__(answers, correct=(0, 2))
        self.victim = victim

    def generate(self, prompts, params):
        import os
        import signal
        from pathlib import Path

        marker = Path(os.environ["SYNTH_TEST_DIE_DIR"]) / "died"
        if self.victim in prompts and not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return super().generate(prompts, params)


def dying_engines(cfg):
    from synth.problems import load_pool

    pool = load_pool(cfg.pool)
    return DyingPolicy({p.problem: p.answer for p in pool}, victim=pool[3].problem), None
