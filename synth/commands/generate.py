"""`synth generate`: search a problem pool with the policy (and a PRM) and write a dataset of verified traces."""

from __future__ import annotations

from synth.generate.run import GenerateConfig, format_summary, generate
from synth.generate.search import require_prm
from synth.hub import push

Config = GenerateConfig


def main(cfg: GenerateConfig) -> int:
    require_prm(cfg.search.strategy, cfg.prm)
    summary = generate(cfg)
    print(f"\nwrote {cfg.output_dir}\n" + format_summary(summary))
    if cfg.push_to_hub:
        push(cfg, cfg.output_dir, cfg.hub_name())
    return 0
