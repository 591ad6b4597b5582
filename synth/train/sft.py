"""`synth train`: supervised fine-tuning of the policy on verified traces with TRL's SFTTrainer.

The dataset is conversational prompt/completion (see `synth.train.data`); the policy's own chat
template renders it and the loss covers the completion tokens only. Full fine-tuning or LoRA; a LoRA
adapter is merged at the end, so ``output_dir/final`` is always a plain checkpoint (with its
tokenizer) that every synth command accepts as ``--model``.
Multi-GPU: ``accelerate launch -m synth train ...``.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synth.config import ConfigError, check_fields
from synth.models import Dtype, precision_args
from synth.rundir import RunDir

log = logging.getLogger(__name__)

# What a training run writes into its output dir (checkpoints, the final model, logs).
OUTPUTS = ("checkpoint-*", "final", "final.tmp", "metrics.json", "runs", "README.md")
# Trainer settings that may change between a run and its resumption.
TRAINER_RUN_CONTROL = ("logging_steps", "save_steps", "save_total_limit", "report_to", "disable_tqdm")
# SFTConfig values synth starts from; any SFTConfig field given in the recipe or on the command line wins.
SFT_DEFAULTS: dict[str, Any] = {
    "num_train_epochs": 2.0,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "learning_rate": 2e-5,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.05,
    "logging_steps": 10,
    "save_steps": 200,
    "save_total_limit": 2,
    "max_length": 512,
    "seed": 0,
    "report_to": "none",
    "disable_tqdm": False,
    "completion_only_loss": True,
    "assistant_only_loss": False,
}
# Set by synth from its own fields: passing them through would contradict those.
NOT_PASSED = ("output_dir", "bf16", "fp16", "use_cpu", "resume_from_checkpoint")
# Old field names (before the trainer's own fields were passed through), kept for one release.
TRAINER_RENAMED = {
    "epochs": "num_train_epochs",
    "batch_size": "per_device_train_batch_size",
    "grad_accum": "gradient_accumulation_steps",
}


# Passed-through settings that must be positive numbers (the trainers fail deep inside, or silently, otherwise).
POSITIVE = (
    "num_train_epochs",
    "per_device_train_batch_size",
    "per_device_eval_batch_size",
    "gradient_accumulation_steps",
    "learning_rate",
    "logging_steps",
    "save_steps",
    "max_length",
)


def check_trainer_args(args: dict[str, Any]) -> None:
    """The checks transformers leaves out, on the passed-through fields; the rest is the trainer config's own."""
    given = [k for k in NOT_PASSED if k in args]
    if given:
        raise ConfigError(f"{', '.join(given)}: set by synth (use output_dir and dtype instead)")
    for key in POSITIVE:
        value = args.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            raise ConfigError(f"{key} must be a number > 0, got {value!r}")


def trainer_kwargs(args: dict[str, Any], defaults: dict[str, Any], dtype: str, output_dir: str) -> dict[str, Any]:
    """The trainer config's keyword arguments: synth's defaults, the user's passthrough fields, precision."""
    check_trainer_args(args)
    kwargs = {**defaults, **args, "output_dir": output_dir, **precision_args(dtype)}
    kwargs.setdefault("per_device_eval_batch_size", kwargs["per_device_train_batch_size"])
    return kwargs


@dataclass
class TrainConfig:
    model: str = field(
        default="smollm2-135m",
        metadata={"help": "Policy to fine-tune: 'smollm2-135m' (bundled), a local checkpoint, or a Hub id."},
    )
    dataset: str = field(
        default="",
        metadata={
            "help": "SFT dataset (prompt/completion, conversational): a `synth filter` output dir, a .jsonl/.parquet file, or a Hub id."
        },
    )
    output_dir: str = field(
        default="runs/sft", metadata={"help": "Where checkpoints, metrics.json and the final model (final/) go."}
    )
    lora: bool = field(
        default=False,
        metadata={"help": "Train a LoRA adapter (merged into the weights at the end) instead of the full model."},
    )
    lora_r: int = field(default=16, metadata={"range": "[1, inf)", "help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"range": "[1, inf)", "help": "LoRA alpha."})
    eval_fraction: float = field(
        default=0.1,
        metadata={"range": "[0, 1)", "help": "Fraction of problems held out for the eval loss (0 for none)."},
    )
    resume: bool = field(default=False, metadata={"help": "Resume from the last checkpoint in output_dir."})
    overwrite: bool = field(
        default=False, metadata={"help": "Start over: clear the synth training run in output_dir first."}
    )
    dtype: Dtype = field(
        default="float32",
        metadata={"help": "Training precision: float32, or bfloat16 / float16 mixed precision (weights stay float32)."},
    )
    args: dict = field(
        default_factory=dict,
        metadata={
            "passthrough": "trl:SFTConfig",
            "help": (
                "Any other field of trl.SFTConfig (learning_rate, num_train_epochs, per_device_train_batch_size, max_length, "
                "report_to, ...); synth's defaults: " + ", ".join(f"{k}={v}" for k, v in SFT_DEFAULTS.items())
            ),
        },
    )

    RENAMED = TRAINER_RENAMED

    def __post_init__(self):
        check_fields(self)
        check_trainer_args(self.args)
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other")

    @property
    def seed(self) -> int:
        return int(self.args.get("seed", SFT_DEFAULTS["seed"]))


def sft_config(cfg: TrainConfig, has_eval: bool):
    """trl.SFTConfig of a run; errors in passed-through fields are one line naming them."""
    from trl import SFTConfig

    kwargs = trainer_kwargs(
        cfg.args, {**SFT_DEFAULTS, "eval_strategy": "epoch" if has_eval else "no"}, cfg.dtype, cfg.output_dir
    )
    try:
        return SFTConfig(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"trl.SFTConfig refused the training settings: {' '.join(str(err).split())[:300]}") from None


def run_dir(cfg: TrainConfig) -> RunDir:
    return RunDir.for_config(cfg, "train", OUTPUTS, TRAINER_RUN_CONTROL, resume=cfg.resume, overwrite=cfg.overwrite)


def build_trainer(cfg: TrainConfig, dataset=None, callbacks: list | None = None):
    """The SFTTrainer for `cfg` (model, tokenizer, splits, LoRA). `dataset` overrides `cfg.dataset`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    from synth.models import resolve_model
    from synth.train.data import as_sft, load_sft, split_by_problem

    if dataset is None:
        if not cfg.dataset:
            raise ConfigError("train needs --dataset: prompt/completion rows, e.g. the output dir of `synth filter`")
        dataset = load_sft(cfg.dataset)
    else:
        dataset = as_sft(dataset)
    train_ds, eval_ds = split_by_problem(dataset, cfg.eval_fraction, cfg.seed)
    args = sft_config(cfg, eval_ds is not None)
    path = resolve_model(cfg.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.chat_template is None:
        raise ConfigError(f"{cfg.model}: the tokenizer has no chat template; synth trains conversational data with it")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    peft_config = None
    if cfg.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(
            task_type="CAUSAL_LM",
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=0.0,
            target_modules="all-linear",
        )
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )


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
    from transformers.trainer_utils import get_last_checkpoint

    run = run_dir(cfg).check()
    out = run.path
    if cfg.resume and (out / "final").exists() and (out / "metrics.json").exists():
        log.info("%s: training finished already", out)
        return json.loads((out / "metrics.json").read_text())
    set_seed(cfg.seed)
    trainer = build_trainer(cfg, dataset, callbacks)  # validates the data, the model and every trainer setting
    with run.claim():
        last = get_last_checkpoint(str(out)) if cfg.resume else None
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

    return (
        f"train_loss {fmt(m['train_loss'])}  eval_loss {fmt(m['eval_loss'])}  tokens/s {fmt(m['tokens_per_s'])}  "
        f"steps {m['steps']}  examples {m['examples']}"
    )
