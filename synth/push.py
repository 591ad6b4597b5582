"""`synth push`: publish a local dataset dir (from generate, merge, filter or label) to the Hub."""

from __future__ import annotations

from dataclasses import dataclass, field

from synth.config import ConfigError
from synth.hub import push_dataset


@dataclass
class PushConfig:
    dataset: str = field(default="", metadata={"help": "Local dataset dir written by a synth command (data/*.parquet + README.md)."})
    repo_id: str = field(default="", metadata={"help": "Hub dataset repo, 'user/name' or 'org/name' (created if missing)."})
    private: bool = field(default=False, metadata={"help": "Create the repo private (an existing repo keeps its visibility)."})
    config_name: str | None = field(default=None, metadata={"help": "Dataset config: its files go to '<config_name>/' and the card lists it (default: the root)."})
    revision: str | None = field(default=None, metadata={"help": "Branch to push to (created from main when missing; default main)."})
    overwrite: bool = field(default=False, metadata={"help": "Replace different data already pushed to this config and revision."})


Config = PushConfig


def main(cfg: PushConfig) -> int:
    if not cfg.dataset or not cfg.repo_id:
        raise ConfigError("push needs --dataset (a local dataset dir) and --repo_id (user/name)")
    url = push_dataset(cfg.dataset, cfg.repo_id, private=cfg.private, config_name=cfg.config_name,
                       revision=cfg.revision, overwrite=cfg.overwrite)
    print(f"pushed {cfg.dataset} to {url}")
    return 0
