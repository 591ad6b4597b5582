"""synth's PRM scored by vLLM's pooling runner: in this process (`prm_engine: vllm`) or behind `vllm serve`
(`prm: http://host:port`).

vLLM has no token-classification head for causal LMs, but it turns a `*ForSequenceClassification`
checkpoint into a pooling model whose `token_classify` task returns the head's output at every token. Our
PRM (a LoRA adapter merged into its backbone, plus a one-logit `score` head) is exactly such a checkpoint,
so `export_for_vllm` writes it once into the cache ($SYNTH_CACHE/prm-vllm/...) with
`architectures: [<Backbone>ForSequenceClassification]` and `problem_type: regression` (raw logits: the
sigmoid is taken here, as the transformers scorer does). Steps are encoded by `synth.prm.format`, the one
encoder training and the transformers scorer use, so both scorers read the same positions.

    vllm serve $(python -m synth.prm.vllm_prm default) --runner pooling --dtype float32   # then --prm http://127.0.0.1:8000
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import sys
from pathlib import Path

from synth.prm.format import encode_steps

log = logging.getLogger(__name__)


class VLLMPRMError(ValueError):
    """A PRM vLLM cannot score; the message says why (and synth falls back to transformers)."""


def export_for_vllm(spec: str) -> Path:
    """A vLLM-loadable copy of a synth PRM (`default`, `default-sentence` or a `synth train-prm` dir), made once."""
    from synth.models import cache_dir
    from synth.prm.load import BUNDLED, load_prm
    from synth.prm.token_cls import META, TokenClassificationPRM

    source = BUNDLED.get(spec) or Path(spec).expanduser()
    if not (Path(source) / META).exists():
        raise VLLMPRMError(f"PRM {spec!r}: vLLM scores synth's token-classification PRMs (with a {META}) only")
    meta = json.loads((Path(source) / META).read_text())
    if meta.get("format", "token-classification") != "token-classification" or meta.get("num_labels", 1) != 1:
        raise VLLMPRMError(
            f"PRM {spec!r} ({meta.get('format')}, {meta.get('num_labels', 1)} labels): vLLM scores "
            "one-logit token-classification PRMs only"
        )
    digest = hashlib.sha256()
    for f in sorted(Path(source).iterdir()):
        if f.is_file():
            digest.update(f.name.encode() + f.read_bytes())
    out = cache_dir() / "prm-vllm" / f"{Path(source).name}-{digest.hexdigest()[:12]}"
    if (out / "config.json").exists():
        return out
    prm = load_prm(str(source), dtype="float32", device="cpu")
    assert isinstance(prm, TokenClassificationPRM)
    model = prm.model
    arch = type(model).__name__.replace("ForTokenClassification", "ForSequenceClassification")
    if arch == type(model).__name__:
        raise VLLMPRMError(f"PRM {spec!r}: {arch} has no sequence-classification counterpart for vLLM")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.config.architectures = [arch]
    model.config.problem_type = "regression"  # raw logits out of vLLM's pooler
    model.save_pretrained(tmp, safe_serialization=True)
    prm.tokenizer.save_pretrained(tmp)
    (tmp / META).write_text(json.dumps({**meta, "exported_from": str(source)}, indent=2))
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    log.info("exported PRM %s for vLLM to %s", spec, out)
    return out


class VLLMPRM:
    """A synth PRM on vLLM: `score` as the transformers scorer, computed by vLLM's pooling runner, in
    process (`LLM(..., runner="pooling")`) or over HTTP (`vllm serve ... --runner pooling`, `/pooling`)."""

    def __init__(
        self, spec: str | None = None, dtype: str = "float32", url: str | None = None, llm=None, max_length: int = 2048
    ):
        from transformers import AutoTokenizer

        from synth.prm.token_cls import META

        self.url = url.rstrip("/") if url else None
        # served: the model the server was started with (its exported dir, when it is on this machine)
        self.path = Path(_served_model(self.url)) if self.url else export_for_vllm(spec)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        meta = json.loads((self.path / META).read_text()) if (self.path / META).exists() else {}
        self.step_separator, self.max_length = meta.get("step_separator", "\n\n"), max_length
        self.step_cut = meta.get("step_cut")
        self.llm = llm if llm is not None or self.url else _engine(str(self.path), dtype)

    def score(self, problems: list[str], steps: list[list[str]]) -> list[list[float]]:
        encoded = [
            encode_steps(self.tokenizer, p, s, self.step_separator, self.max_length) for p, s in zip(problems, steps)
        ]
        logits = self._token_logits([e.input_ids for e in encoded])
        out = []
        for e, row, s in zip(encoded, logits, steps):
            scores = [1.0 / (1.0 + math.exp(-row[i])) for i in e.label_positions]
            out.append(scores + [scores[-1] if scores else 0.5] * (len(s) - len(scores)))
        return out

    def _token_logits(self, sequences: list[list[int]]) -> list[list[float]]:
        if not sequences:
            return []
        if self.url:
            return _served_logits(self.url, sequences)
        from vllm.inputs import TokensPrompt

        outputs = self.llm.encode(
            [TokensPrompt(prompt_token_ids=s) for s in sequences], pooling_task="token_classify", use_tqdm=False
        )
        return [o.outputs.data.reshape(-1).float().tolist() for o in outputs]


def _engine(path: str, dtype: str):
    from vllm import LLM

    from synth.generate.vllm import _on_cpu, keep_engine

    kw = {"model": path, "runner": "pooling", "dtype": dtype, "enforce_eager": _on_cpu(), "enable_prefix_caching": True}
    if _on_cpu():
        kw.update(max_model_len=2048, max_num_batched_tokens=8192, kv_cache_memory_bytes=1 << 30)
    llm = LLM(**kw)
    keep_engine(llm)
    return llm


def _served_model(url: str) -> str:
    """The model a PRM server serves (GET /v1/models): a path or Hub id its tokenizer loads from."""
    import httpx

    try:
        return httpx.get(f"{url}/v1/models", timeout=30).json()["data"][0]["id"]
    except (httpx.HTTPError, KeyError, IndexError, ValueError) as err:
        raise VLLMPRMError(f"PRM server {url} did not say what it serves (GET /v1/models: {err})") from None


def _served_logits(url: str, sequences: list[list[int]]) -> list[list[float]]:
    import httpx

    try:
        resp = httpx.post(f"{url}/pooling", json={"input": sequences, "task": "token_classify"}, timeout=600)
        resp.raise_for_status()
    except httpx.HTTPError as err:
        raise VLLMPRMError(f"PRM server {url}: {type(err).__name__}: {' '.join(str(err).split())[:200]}") from None
    return [[float(v[0]) if isinstance(v, list) else float(v) for v in item["data"]] for item in resp.json()["data"]]


if __name__ == "__main__":  # print the vLLM-loadable copy of a PRM (to serve it)
    print(export_for_vllm(sys.argv[1] if len(sys.argv) > 1 else "default"))
