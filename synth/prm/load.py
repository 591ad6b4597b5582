"""Resolve a PRM spec to a scorer: 'default' (bundled), a local PRM directory, or a Hub id."""

from __future__ import annotations

import json
from pathlib import Path

from synth.prm.scorer import PRM

BUNDLED_DIR = Path(__file__).parent / "default"


class PRMError(ValueError):
    """A PRM spec that cannot be loaded."""


def load_prm(spec: str, **kw) -> PRM:
    from synth.prm.token_cls import META, TokenClassificationPRM

    if spec == "default":
        if not (BUNDLED_DIR / META).exists():
            raise PRMError("the bundled default PRM is missing: regenerate it with scripts/make_default_prm.sh")
        return TokenClassificationPRM.from_pretrained(BUNDLED_DIR, **kw)
    path = Path(spec).expanduser()
    if path.exists():
        meta = json.loads((path / META).read_text()) if (path / META).exists() else {}
        fmt = meta.get("format", "token-classification")
        if fmt == "token-classification":
            return TokenClassificationPRM.from_pretrained(path, **kw)
        raise PRMError(f"{path}: unknown PRM format {fmt!r}")
    raise PRMError(f"PRM '{spec}' not found: use 'default', or a directory written by `synth train-prm`")
