"""`synth train`: fine-tune the policy on verified traces with TRL's SFTTrainer (completion-only loss;
full or LoRA, merged). Multi-GPU: `accelerate launch -m synth train ...`."""

from __future__ import annotations

from synth.train.sft import TrainConfig, metrics_line, train_sft

Config = TrainConfig


def main(cfg: TrainConfig) -> int:
    metrics = train_sft(cfg)
    print(f"\nwrote {metrics['model']}\n{metrics_line(metrics)}")
    return 0
