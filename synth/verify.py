"""Answer extraction and verification against gold answers.

reasoning-gym problems are scored by the task's own `score_answer`; only 1.0 counts as verified
(partial credit does not). Other problems are compared with math-verify (gold parsed first) in worker
processes: there math-verify's own signal timeouts work (a worker runs each check on its main
thread), so a pathological expression ends after `timeout` seconds without blocking the checks
behind it, and a check that ignores the signal (stuck in C code) is abandoned at a hard deadline,
its worker killed and the checks still queued sent to a fresh pool. Workers exit with their parent.
"""

from __future__ import annotations

import atexit
import logging
import re
from concurrent.futures import ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from fractions import Fraction
from functools import cache, lru_cache

from synth.records import Problem

log = logging.getLogger(__name__)

_NUMBER = r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?(?:/\d+)?|-?\.\d+"
_ANSWER_PHRASE = re.compile(r"(?:final answer is|answer is|answer:)\s*:?\s*(.+?)(?:\n|$)", re.IGNORECASE)


def _boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} / \\fbox{...}, nested braces included."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth, out = 1, []
    while i < len(text):
        ch = text[i]
        depth += ch == "{"
        depth -= ch == "}"
        if depth == 0:
            return "".join(out).strip()
        out.append(ch)
        i += 1
    return None  # unbalanced: no answer


def _clean(answer: str) -> str:
    answer = re.sub(r"(?i)\.?\s*I hope it is correct\.?", "", answer).strip()
    answer = answer.strip().strip("$").strip()
    answer = re.sub(r"^\\\(|\\\)$", "", answer).strip()
    answer = answer.rstrip(".").strip().strip("$").strip()
    quoted = re.fullmatch(r"([\"'*`]+)(.+?)\1", answer)  # "15", **15**, `15`
    return quoted.group(2).rstrip(".").strip() if quoted and quoted.group(2).strip() else answer


def extract_answer(text: str | None) -> str | None:
    """The final answer of a completion: last \\boxed{}, else 'the answer is X', else the last number."""
    if not text:
        return None
    boxed = _boxed(text)
    if boxed:
        return boxed
    phrases = _ANSWER_PHRASE.findall(text)
    if phrases:
        answer = _clean(phrases[-1])
        lead = re.match(rf"({_NUMBER})(?=$|[\s,;.!)])", answer)
        if lead:  # "The answer is 42, because ..." -> 42; an expression stays as it is
            answer = lead.group(1)
        if answer:
            return answer.replace(",", "") if re.fullmatch(_NUMBER, answer) else answer
    numbers = re.findall(_NUMBER, text)
    return numbers[-1].replace(",", "") if numbers else None


_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")


def _as_number(text: str) -> Fraction | None:
    """A plain number (12, -3.5, 1/2, \\frac{1}{2}, 1,234 with thousands separators, $18.90), else None.
    A comma is a thousands separator only between groups of three digits: "1, 2" is no number."""
    text = text.strip().replace("\\$", "$").strip("$").strip()
    if "," in text:
        if not _THOUSANDS.fullmatch(text):
            return None
        text = text.replace(",", "")
    m = re.fullmatch(r"\\[dt]?frac\{(-?\d+)\}\{(-?\d+)\}", text)
    if m:
        text = f"{m.group(1)}/{m.group(2)}"
    if not re.fullmatch(r"-?(\d+(\.\d*)?|\.\d+)(/\d+)?", text):
        return None
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None


def _fast_equal(pred: str, gold: str) -> bool | None:
    """True/False when the answers are plain numbers or identical strings; None: ask math-verify."""
    if pred.strip() == gold.strip():
        return True
    a, b = _as_number(pred), _as_number(gold)
    if a is not None and b is not None:
        return a == b
    return None


class _Expired(BaseException):
    """Raised by the worker's timer; a BaseException so that no `except Exception` inside math-verify eats it."""


def _math_verify(pred: str, gold: str, timeout: float) -> bool:
    """Runs in a worker process, on its main thread: one timer bounds the whole check (both parses and the
    comparison), with math-verify's own whole-second alarms off."""
    import signal

    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.CRITICAL)

    def expire(*_):
        raise _Expired

    timer = hasattr(signal, "setitimer")
    if timer:
        signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        gold_parsed = parse(_wrap(gold), parsing_timeout=None)
        pred_parsed = parse(_wrap(pred), parsing_timeout=None)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))
    except (Exception, _Expired):  # noqa: BLE001 - bad LaTeX or a timeout is unverified, never raised
        return False
    finally:
        if timer:
            signal.setitimer(signal.ITIMER_REAL, 0)


def _wrap(answer: str) -> str:
    """math-verify extracts from LaTeX environments: give bare answers one (an escaped \\$ is a dollar sign)."""
    return answer if "$" in answer.replace("\\$", "") or "\\boxed" in answer else f"${answer}$"


def _watch_parent(parent: int) -> None:
    """Worker initializer: exit as soon as the parent is gone (killed, SIGTERM), never linger as an orphan."""
    import os
    import threading
    import time

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


WORKERS = 4  # started on demand: a few pathological checks at once do not hold up the rest


@lru_cache(maxsize=1)
def _pool() -> ProcessPoolExecutor:
    import multiprocessing as mp
    import os

    pool = ProcessPoolExecutor(
        max_workers=WORKERS, mp_context=mp.get_context("spawn"), initializer=_watch_parent, initargs=(os.getpid(),)
    )
    atexit.register(pool.shutdown, wait=False, cancel_futures=True)
    return pool


def _reset_pool() -> None:
    """Kill the workers (one is stuck past its deadline) and start afresh on the next call."""
    pool = _pool()
    _pool.cache_clear()
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        proc.kill()
    pool.shutdown(wait=False, cancel_futures=True)


def _run_checks(pairs: list[tuple[str, str]], timeout: float) -> dict[tuple[str, str], bool]:
    """math-verify every pair in the worker pool. Each check has `timeout` seconds inside its worker; a
    round waits at most twice that (the workers' timers end almost every check by then), then abandons
    the checks still running (False) and resubmits those never started to a fresh pool."""
    verdicts: dict[tuple[str, str], bool] = {}
    todo = list(dict.fromkeys(pairs))
    while todo:
        try:
            futures = {_pool().submit(_math_verify, p, g, timeout): (p, g) for p, g in todo}
        except BrokenProcessPool:  # a worker died earlier (killed from outside): start afresh once
            _reset_pool()
            futures = {_pool().submit(_math_verify, p, g, timeout): (p, g) for p, g in todo}
        done, pending = wait(futures, timeout=2 * timeout + 1)
        for fut in done:
            try:
                verdicts[futures[fut]] = bool(fut.result())
            except Exception:  # noqa: BLE001 - a broken worker must not stop the run
                verdicts[futures[fut]] = False
        if not pending:
            break
        started = [f for f in pending if f.running()]
        for fut in started:
            verdicts[futures[fut]] = False
        log.warning("%d math-verify check(s) ran past %.0fs: counted unverified", len(started), 2 * timeout + 1)
        todo = [futures[f] for f in pending if not f.running()]
        _reset_pool()
        if not started:  # nothing got to run: the pool itself is broken
            verdicts.update({pair: False for pair in todo})
            break
    return verdicts


def verify_many(pairs: list[tuple[str | None, str]], timeout: float = 5.0) -> list[bool]:
    """math_equal over many (pred, gold) pairs: fast paths in-process, the rest on the worker pool."""
    results: list[bool | None] = []
    pending = {}
    for i, (pred, gold) in enumerate(pairs):
        if pred is None or not str(pred).strip() or gold is None or not str(gold).strip():
            results.append(False)
            continue
        fast = _fast_equal(str(pred), str(gold))
        results.append(fast)
        if fast is None:
            pending[i] = (str(pred), str(gold))
    if pending:
        # N samples of a problem often give the same answer: each distinct pair is checked once
        verdicts = _run_checks(list(pending.values()), timeout)
        for i, args in pending.items():
            results[i] = verdicts[args]
    return [bool(r) for r in results]


def math_equal(pred: str | None, gold: str, timeout: float = 5.0) -> bool:
    """Is `pred` mathematically equal to `gold`? Never raises, never hangs past `timeout`."""
    return verify_many([(pred, gold)], timeout)[0]


@cache
def _task_scorer(name: str):
    import reasoning_gym

    return reasoning_gym.get_score_answer_fn(name)


def score_with_task(answer: str | None, problem: Problem) -> float:
    """The reasoning-gym task's own score (partial credit possible) for `answer`."""
    if answer is None:
        return 0.0
    info = problem.metadata["reasoning_gym"]
    try:
        return float(_task_scorer(info["dataset"])(answer, info["entry"]) or 0.0)
    except Exception as err:  # noqa: BLE001 - a scorer bug counts as unverified
        log.warning("reasoning-gym scorer for %s failed on %r: %s", info["dataset"], answer, err)
        return 0.0


def verify_answers(answers: list[str | None], problems: list[Problem], timeout: float = 5.0) -> list[bool | None]:
    """Verified flag per answer: task scorer == 1.0 for reasoning-gym, math-verify otherwise, None without gold."""
    out: list[bool | None] = [None] * len(answers)
    math_idx = []
    for i, (a, p) in enumerate(zip(answers, problems)):
        if "reasoning_gym" in p.metadata:
            out[i] = score_with_task(a, p) == 1.0
        elif p.answer is None or not str(p.answer).strip():
            out[i] = None
        else:
            math_idx.append(i)
    if math_idx:
        for i, ok in zip(math_idx, verify_many([(answers[i], problems[i].answer) for i in math_idx], timeout)):
            out[i] = ok
    return out


def verify_answer(answer: str | None, problem: Problem) -> bool | None:
    return verify_answers([answer], [problem])[0]
