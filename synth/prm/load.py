"""Resolve a PRM spec to a scorer: 'default' (bundled), a local PRM directory, or a Hub id."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from synth.prm.scorer import PRM

log = logging.getLogger(__name__)

BUNDLED_DIR = Path(__file__).parent / "default"
# Bundled PRMs by name: `default` scores "\n\n" steps, `default-sentence` sentence steps (search.step_cut: sentence).
BUNDLED = {"default": BUNDLED_DIR, "default-sentence": Path(__file__).parent / "default_sentence"}


class PRMError(ValueError):
    """A PRM spec that cannot be loaded."""


def _vllm_prm(spec: str, dtype: str) -> PRM | None:
    from synth.generate.vllm import vllm_available

    if not vllm_available():
        log.warning("prm_engine vllm: vLLM is not installed here; the PRM scores with transformers")
        return None
    from synth.prm.vllm_prm import VLLMPRM, VLLMPRMError

    try:
        return VLLMPRM(spec, dtype="float32" if dtype == "auto" else dtype)
    except VLLMPRMError as err:
        log.warning("prm_engine vllm: %s; the PRM scores with transformers", err)
        return None


def check_prm(spec: str) -> None:
    """What `load_prm` would refuse, found without building the model (the driver of a distributed run
    validates the PRM its workers will load): a missing bundled PRM, a directory that is no model or holds no
    PRM head, an unknown format or spec."""
    from synth.prm.token_cls import META, check_checkpoint

    if spec in BUNDLED:
        if not (BUNDLED[spec] / META).exists():
            raise PRMError(f"the bundled PRM '{spec}' is missing: regenerate it with scripts/make_default_prm.sh")
        return
    path = Path(spec).expanduser()
    if path.exists():
        meta = json.loads((path / META).read_text()) if (path / META).exists() else {}
        fmt = meta.get("format", "token-classification")
        if fmt == "token-classification":
            check_checkpoint(path)
        elif fmt not in OTHER_FORMATS:
            raise PRMError(f"{path}: unknown PRM format {fmt!r}")
        return
    if spec.startswith(("http://", "https://")):
        return
    if _known_hub_format(spec) is None and ("/" not in spec or spec.startswith((".", "/", "~"))):
        raise PRMError(
            f"PRM '{spec}' not found: use 'default', 'default-sentence', or a directory written by `synth train-prm`"
        )


def load_prm(spec: str, dtype: str = "auto", engine: str = "transformers", **kw) -> PRM:
    """A PRM scorer from `spec`; `dtype` (auto: bf16 where the hardware has native bf16) is what it scores in.
    `spec` http://host:port is a PRM behind `vllm serve --runner pooling`; `engine: vllm` scores a synth PRM
    with vLLM in this process, falling back to transformers (with one line saying why) where vLLM cannot."""
    from synth.prm.token_cls import META, TokenClassificationPRM

    if spec.startswith(("http://", "https://")):
        from synth.prm.vllm_prm import VLLMPRM

        return VLLMPRM(url=spec)
    if engine == "vllm":
        vllm_prm = _vllm_prm(spec, dtype)
        if vllm_prm is not None:
            return vllm_prm
    kw["dtype"] = dtype

    if spec in BUNDLED:
        if not (BUNDLED[spec] / META).exists():
            raise PRMError(f"the bundled PRM '{spec}' is missing: regenerate it with scripts/make_default_prm.sh")
        return TokenClassificationPRM.from_pretrained(BUNDLED[spec], **kw)
    path = Path(spec).expanduser()
    if path.exists():
        meta = json.loads((path / META).read_text()) if (path / META).exists() else {}
        fmt = meta.get("format", "token-classification")
        if fmt == "token-classification":
            return TokenClassificationPRM.from_pretrained(path, **kw)
        if fmt in OTHER_FORMATS:
            return _load_format(fmt, str(path), meta, spec, **kw)
        raise PRMError(f"{path}: unknown PRM format {fmt!r}")
    known = _known_hub_format(spec)
    if known is not None:
        return _load_format(known[0], spec, known[1], spec, **kw)
    if "/" in spec and not spec.startswith((".", "/", "~")):
        local = _hub_snapshot_with_meta(spec)
        if local is not None:
            return load_prm(local, **kw)  # dtype is in kw
        raise PRMError(
            f"PRM '{spec}' not recognised: a Hub PRM needs a {META} or to be one of {', '.join(sorted(KNOWN_HUB_IDS))}"
        )
    raise PRMError(
        f"PRM '{spec}' not found: use 'default', 'default-sentence', or a directory written by `synth train-prm`"
    )


# -- other PRM formats: '+/-' token PRMs (Math-Shepherd, RLHFlow) and Qwen2.5-Math-PRM ----------------
OTHER_FORMATS = ("plus-minus", "qwen-math-prm")
KNOWN_HUB_IDS = (
    "peiyi9979/math-shepherd-mistral-7b-prm",
    "RLHFlow/Llama3.1-8B-PRM-Deepseek-Data",
    "RLHFlow/Llama3.1-8B-PRM-Mistral-Data",
    "Qwen/Qwen2.5-Math-PRM-7B",
    "Qwen/Qwen2.5-Math-PRM-72B",
)


def _known_hub_format(spec: str) -> tuple[str, dict] | None:
    from synth.prm.plus_minus import HUB_STYLES
    from synth.prm.qwen import is_qwen_math_prm_id

    if spec.lower() in HUB_STYLES:
        return "plus-minus", {"style": HUB_STYLES[spec.lower()]}
    if is_qwen_math_prm_id(spec):
        return "qwen-math-prm", {}
    return None


def _load_format(fmt: str, where: str, meta: dict, spec: str, dtype: str = "auto", **kw) -> PRM:
    from synth.models import default_device, resolve_dtype

    kw["torch_dtype"] = resolve_dtype(dtype, kw.get("device") or default_device())
    try:
        if fmt == "plus-minus":
            from synth.prm.plus_minus import PlusMinusPRM

            return PlusMinusPRM.from_pretrained(where, style=meta.get("style"), **kw)
        from synth.prm.qwen import QwenMathPRM

        return QwenMathPRM.from_pretrained(where, **kw)
    except (ValueError, OSError) as err:  # bad style or tokenizer, files missing or offline: name the spec
        raise PRMError(f"PRM '{spec}' ({fmt}): {err}") from err


def _hub_snapshot_with_meta(spec: str) -> str | None:
    """A local snapshot of Hub repo `spec` if it holds a synth_prm.json, else None."""
    from synth.prm.token_cls import META

    try:
        from huggingface_hub import hf_hub_download, snapshot_download

        hf_hub_download(spec, META)
        return snapshot_download(spec)
    except Exception:  # not on the Hub, no synth_prm.json, offline
        return None
