"""`synth label`: step labels from Monte-Carlo rollouts for the traces of a generate run (stepwise PRM data)."""

from __future__ import annotations

import json

from synth.hub import push
from synth.prm.label import LabelConfig, label

Config = LabelConfig


def main(cfg: LabelConfig) -> int:
    print(json.dumps(label(cfg), indent=2))
    if cfg.push_to_hub:
        push(cfg, cfg.output_dir, "stepwise" + (f"--shard-{cfg.shard.replace('/', '-of-')}" if cfg.shard else ""))
    return 0
