"""`synth merge`: join the output dirs of sharded `synth generate` or `synth label` runs into one run."""

from __future__ import annotations

from synth.hub import push
from synth.merge import MergeConfig, merge

Config = MergeConfig


def main(cfg: MergeConfig) -> int:
    result = merge(cfg)
    print(f"merged {result['shards']} {result['command']} shards ({len(cfg.runs)} runs) into {cfg.output_dir}")
    if cfg.push_to_hub:
        push(cfg, cfg.output_dir, hub_name(result["command"], result["config"]))
    return 0


def hub_name(command: str, config: dict) -> str:
    """The Hub config a merged run pushes to by default: the unsharded run's name."""
    if command == "label":
        return "stepwise"
    from synth.config import ConfigError, from_dict
    from synth.generate.run import GenerateConfig

    try:
        return from_dict(GenerateConfig, config).hub_name()
    except ConfigError:
        return "merged"
