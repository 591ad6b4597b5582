"""Copy a trained LoRA PRM into a small, shippable folder (adapter in fp16, head, metadata).

    python -m synth.prm.package runs/prm-smollm2/prm/final synth/prm/default

The tokenizer is not copied: it is the base model's, loaded from there.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path


def package(src: str | Path, dst: str | Path) -> Path:
    import torch
    from safetensors.torch import load_file, save_file

    from synth.prm.token_cls import META

    src, dst = Path(src), Path(dst)
    if not (src / "adapter_config.json").exists():
        raise SystemExit(f"{src} holds no LoRA adapter (train-prm with lora: true)")
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weights = load_file(str(src / "adapter_model.safetensors"))
    save_file({k: v.to(torch.float16) for k, v in weights.items()}, str(tmp / "adapter_model.safetensors"))
    for name in ("adapter_config.json", META, "metrics.json"):
        if (src / name).exists():
            shutil.copy(src / name, tmp / name)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    size = sum(f.stat().st_size for f in dst.iterdir()) / 2**20
    print(f"packaged {src} -> {dst} ({size:.1f} MiB)")
    print(
        json.dumps(json.loads((dst / "metrics.json").read_text()) if (dst / "metrics.json").exists() else {}, indent=2)
    )
    return dst


if __name__ == "__main__":
    package(sys.argv[1], sys.argv[2])
