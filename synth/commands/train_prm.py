"""`synth train-prm`: train a process reward model on stepwise data (transformers Trainer; LoRA or full).
Multi-GPU: `accelerate launch -m synth train-prm ...`."""

from __future__ import annotations

import json

from synth.prm.train import TrainPRMConfig, train_prm

Config = TrainPRMConfig


def main(cfg: TrainPRMConfig) -> int:
    print(json.dumps(train_prm(cfg), indent=2))
    return 0
