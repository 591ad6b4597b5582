"""`synth push`: publish a local dataset dir (from generate, merge, filter or label) to the Hub."""

from __future__ import annotations

from dataclasses import dataclass, field

from synth.config import ConfigError
from synth.hub import PushConfig, push


@dataclass
class PushCommandConfig(PushConfig):
    push_to_hub: bool = field(default=True, metadata={"group": "hub", "help": "Always true for `synth push`."})
    dataset: str = field(
        default="", metadata={"help": "Local dataset dir written by a synth command (data/*.parquet + README.md)."}
    )

    RENAMED = {
        **PushConfig.RENAMED,
        "repo_id": "hub_dataset_id",
        "revision": "hub_revision",
        "private": "hub_private",
        "config_name": "hub_config_name",
        "overwrite": "hub_overwrite",
    }

    def __post_init__(self):
        if not self.dataset or not self.hub_dataset_id:
            raise ConfigError("push needs --dataset (a local dataset dir) and --hub_dataset_id (user/name)")
        super().__post_init__()


Config = PushCommandConfig


def main(cfg: PushCommandConfig) -> int:
    push(cfg, cfg.dataset)
    return 0
