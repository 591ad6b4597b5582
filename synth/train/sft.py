"""`synth train`: supervised fine-tuning of the policy on verified traces with TRL's SFTTrainer.

The dataset is conversational prompt/completion (see `synth.train.data`); the policy's own chat
template renders it and the loss covers the completion tokens only. Full fine-tuning or LoRA; a LoRA
adapter is merged at the end, so ``output_dir/final`` is always a plain checkpoint (with its
tokenizer) that every synth command accepts as ``--model``.
Multi-GPU: ``accelerate launch -m synth.cli train ...``.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synth.config import ConfigError

log = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16", "float16")


def precision_args(dtype: str) -> dict[str, bool]:
    """TrainingArguments flags for `dtype` (one of DTYPES): mixed precision, on the CPU when there is no GPU."""
    import torch

    return {"bf16": dtype == "bfloat16", "fp16": dtype == "float16",
            "use_cpu": dtype != "float32" and not torch.cuda.is_available()}  # else transformers refuses bf16 on a CPU


@dataclass
class TrainConfig:
    model: str = field(default="smollm2-135m", metadata={"help": "Policy to fine-tune: 'smollm2-135m' (bundled), a local checkpoint, or a Hub id."})
    dataset: str = field(default="", metadata={"help": "SFT dataset (prompt/completion, conversational): a `synth filter` output dir, a .jsonl/.parquet file, or a Hub id."})
    output_dir: str = field(default="runs/sft", metadata={"help": "Where checkpoints, metrics.json and the final model (final/) go."})
    lora: bool = field(default=False, metadata={"help": "Train a LoRA adapter (merged into the weights at the end) instead of the full model."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    learning_rate: float = field(default=2e-5, metadata={"help": "Peak learning rate (cosine schedule; ~2e-4 suits LoRA)."})
    epochs: float = field(default=2.0, metadata={"help": "Training epochs."})
    batch_size: int = field(default=8, metadata={"help": "Per-device batch size."})
    grad_accum: int = field(default=1, metadata={"help": "Gradient accumulation steps."})
    max_length: int = field(default=512, metadata={"help": "Max tokens per example (prompt + completion; longer ones are cut)."})
    eval_fraction: float = field(default=0.1, metadata={"help": "Fraction of problems held out for the eval loss (0 for none)."})
    save_steps: int = field(default=200, metadata={"help": "Checkpoint every this many optimizer steps (and at the end)."})
    logging_steps: int = field(default=10, metadata={"help": "Log the training loss every this many steps."})
    resume: bool = field(default=False, metadata={"help": "Resume from the last checkpoint in output_dir."})
    seed: int = field(default=0, metadata={"help": "Seed for the split, LoRA init and data order."})
    dtype: str = field(default="float32", metadata={"help": "Training precision: float32, or bfloat16 / float16 mixed precision (weights stay float32)."})

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {list(DTYPES)}, got {self.dtype!r}")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        checks = {"epochs": self.epochs > 0, "batch_size": self.batch_size >= 1, "grad_accum": self.grad_accum >= 1,
                  "max_length": self.max_length >= 8, "learning_rate": self.learning_rate > 0,
                  "lora_r": self.lora_r >= 1, "save_steps": self.save_steps >= 1, "logging_steps": self.logging_steps >= 1}
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"{name} has an invalid value: {getattr(self, name)}")


def _check_output(cfg: TrainConfig) -> str | None:
    """The checkpoint to resume from; refuses to train over an earlier run unless resuming."""
    from transformers.trainer_utils import get_last_checkpoint

    out = Path(cfg.output_dir)
    last = get_last_checkpoint(str(out)) if out.is_dir() else None
    if (last or (out / "final").exists()) and not cfg.resume:
        raise ConfigError(f"{out} already holds a training run: pass --resume true to continue it, or pick a new output_dir")
    return last if cfg.resume else None


def build_trainer(cfg: TrainConfig, dataset=None, callbacks: list | None = None):
    """The SFTTrainer for `cfg` (model, tokenizer, splits, LoRA). `dataset` overrides `cfg.dataset`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from synth.models import resolve_model
    from synth.train.data import load_sft, split_by_prompt, validate

    if dataset is None:
        if not cfg.dataset:
            raise ConfigError("train needs --dataset: prompt/completion rows, e.g. the output dir of `synth filter`")
        dataset = load_sft(cfg.dataset)
    else:
        dataset = validate(dataset)
    path = resolve_model(cfg.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.chat_template is None:
        raise ConfigError(f"{cfg.model}: the tokenizer has no chat template; synth trains conversational data with it")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    train_ds, eval_ds = split_by_prompt(dataset, cfg.eval_fraction, cfg.seed)
    peft_config = None
    if cfg.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(task_type="CAUSAL_LM", r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                                 target_modules="all-linear")
    args = SFTConfig(
        output_dir=cfg.output_dir, num_train_epochs=cfg.epochs, per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate, lr_scheduler_type="cosine", warmup_steps=0.05,
        logging_steps=cfg.logging_steps, save_steps=cfg.save_steps, save_total_limit=2,
        eval_strategy="epoch" if eval_ds is not None else "no", max_length=cfg.max_length,
        completion_only_loss=True, assistant_only_loss=False, **precision_args(cfg.dtype),
        report_to="none", seed=cfg.seed, data_seed=cfg.seed, disable_tqdm=False,
    )
    return SFTTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                      processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks)


def save_final(trainer, out: Path, lora: bool) -> Path:
    """Write a plain checkpoint + tokenizer to `out` (atomic: a half-written final/ never exists)."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model = trainer.accelerator.unwrap_model(trainer.model)
    if lora:
        model = model.merge_and_unload()
    model.config.use_cache = True  # training turns it off; inference wants it
    if lora:
        model.save_pretrained(tmp)
    else:
        trainer.save_model(str(tmp))
    trainer.processing_class.save_pretrained(tmp)
    for extra in ("training_args.bin", "README.md"):  # trainer bookkeeping, not part of a model dir
        (tmp / extra).unlink(missing_ok=True)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def train_sft(cfg: TrainConfig, dataset=None, callbacks: list | None = None) -> dict[str, Any]:
    """Train, save `final/`, write metrics.json; returns the metrics. `dataset`: an in-memory
    `datasets.Dataset` instead of `cfg.dataset`; `callbacks`: extra transformers TrainerCallbacks."""
    from transformers import set_seed

    last = _check_output(cfg)
    out = Path(cfg.output_dir)
    if cfg.resume and (out / "final").exists() and (out / "metrics.json").exists():
        log.info("%s: training finished already", out)
        return json.loads((out / "metrics.json").read_text())
    set_seed(cfg.seed)
    trainer = build_trainer(cfg, dataset, callbacks)
    if last:
        log.info("resuming from %s", last)
    result = trainer.train(resume_from_checkpoint=last)
    final = save_final(trainer, out / "final", cfg.lora)
    history = trainer.state.log_history
    eval_losses = [h["eval_loss"] for h in history if "eval_loss" in h]
    if trainer.eval_dataset is not None and not eval_losses:
        eval_losses = [trainer.evaluate()["eval_loss"]]
    runtime = result.metrics.get("train_runtime", 0.0)
    tokens = int(getattr(trainer, "_total_train_tokens", 0))
    metrics = {
        "train_loss": result.training_loss,
        "eval_loss": eval_losses[-1] if eval_losses else None,
        "tokens_per_s": round(tokens / runtime, 1) if runtime > 0 else None,
        "train_tokens": tokens,
        "steps": result.global_step,
        "examples": len(trainer.train_dataset),
        "eval_examples": len(trainer.eval_dataset) if trainer.eval_dataset is not None else 0,
        "train_runtime_s": round(runtime, 1),
        "losses": [h["loss"] for h in history if "loss" in h],
        "model": str(final),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    log.info("model saved to %s", final)
    return metrics


def metrics_line(m: dict[str, Any]) -> str:
    def fmt(v):
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    return (f"train_loss {fmt(m['train_loss'])}  eval_loss {fmt(m['eval_loss'])}  tokens/s {fmt(m['tokens_per_s'])}  "
            f"steps {m['steps']}  examples {m['examples']}")


Config = TrainConfig


def main(cfg: TrainConfig) -> int:
    metrics = train_sft(cfg)
    print(f"\nwrote {metrics['model']}\n{metrics_line(metrics)}")
    return 0
