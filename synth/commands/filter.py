"""`synth filter`: generate rows -> filtered training data (SFT, stepwise PRM or preference), optionally pushed."""

from __future__ import annotations

from synth.filter.run import FilterConfig, run
from synth.hub import push

Config = FilterConfig


def main(cfg: FilterConfig) -> int:
    result = run(cfg)
    print(result["table"])
    print(f"\nwrote {result['rows']} {cfg.format} rows to {result['output_dir']}")
    if cfg.push_to_hub:
        push(cfg, cfg.output_dir, "default")
    return 0
