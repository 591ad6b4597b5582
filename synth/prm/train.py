"""`synth train-prm`: a token-classification PRM trained with transformers' Trainer.

Each step's label sits on the last token of its separator (see `synth.prm.format`); every other
token is ignored. Soft labels (fraction of correct rollouts) are trained with BCE as they are,
not rounded. Optionally (`pairwise_weight`) a ranking loss pushes a right trace's final score above a
wrong trace's of the same problem: best-of-N's pick and tree search rank within a problem, while
BCE alone can lower its loss by telling easy problems from hard ones. Full fine-tuning or LoRA (peft; the head is
trained and saved with the adapter).
Multi-GPU: `accelerate launch -m synth train-prm ...`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from synth.config import ConfigError, check_fields
from synth.formats import hard_label_column, soft_label_column
from synth.models import Dtype
from synth.prm.format import encode_steps
from synth.rundir import RunDir
from synth.train.sft import OUTPUTS, TRAINER_RENAMED, TRAINER_RUN_CONTROL, check_trainer_args, trainer_kwargs

log = logging.getLogger(__name__)
IGNORE = -100.0

# TrainingArguments values synth starts from; any TrainingArguments field given wins.
PRM_DEFAULTS: dict[str, Any] = {
    "num_train_epochs": 2.0,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "learning_rate": 2e-4,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.05,
    "logging_steps": 10,
    "save_steps": 200,
    "save_total_limit": 2,
    "seed": 0,
    "report_to": "none",
    "disable_tqdm": False,
    "remove_unused_columns": False,
}


@dataclass
class TrainPRMConfig:
    dataset: list[str] = field(
        default_factory=list,
        metadata={
            "help": (
                "Stepwise dataset(s) (prompt/completions/labels): local dirs or files, or Hub ids; several are "
                "concatenated, a trace that occurs in more than one kept once."
            )
        },
    )
    model: str = field(
        default="smollm2-135m", metadata={"help": "Backbone: 'smollm2-135m', a local checkpoint, or a Hub id."}
    )
    output_dir: str = field(default="runs/prm", metadata={"help": "Where checkpoints and the final PRM go."})
    label: str = field(
        default="soft",
        metadata={
            "help": "Which labels to train on: 'soft' (fraction of correct rollouts: soft_labels where present) or 'hard' (any correct)."
        },
    )
    step_separator: str = field(
        default="\n\n", metadata={"help": "Separator appended after the problem and each step."}
    )
    lora: bool = field(default=True, metadata={"help": "Train a LoRA adapter (+ the head) instead of the full model."})
    lora_r: int = field(default=8, metadata={"range": "[1, inf)", "help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"range": "[1, inf)", "help": "LoRA alpha."})
    max_length: int = field(
        default=512, metadata={"range": "[8, inf)", "help": "Max tokens per example (steps past it are dropped)."}
    )
    eval_fraction: float = field(
        default=0.1, metadata={"range": "[0, 1)", "help": "Fraction of problems held out for evaluation (by prompt)."}
    )
    resume: bool = field(default=False, metadata={"help": "Resume from the last checkpoint in output_dir."})
    overwrite: bool = field(
        default=False, metadata={"help": "Start over: clear the synth training run in output_dir first."}
    )
    dtype: Dtype = field(
        default="float32",
        metadata={"help": "Training precision: float32, or bfloat16 / float16 mixed precision (weights stay float32)."},
    )
    pairwise_weight: float = field(
        default=0.0,
        metadata={
            "range": "[0, inf)",
            "help": (
                "Weight of a within-problem ranking loss: a logistic loss on the final-step score of a right minus "
                "a wrong trace of the same problem, added to the BCE. Batches then hold the traces of one or two "
                "problems (problems shuffled, their traces kept together). 0 = BCE only."
            ),
        },
    )
    args: dict = field(
        default_factory=dict,
        metadata={
            "passthrough": "transformers:TrainingArguments",
            "help": (
                "Any other field of transformers.TrainingArguments; synth's defaults: "
                + ", ".join(f"{k}={v}" for k, v in PRM_DEFAULTS.items())
            ),
        },
    )

    RENAMED = TRAINER_RENAMED

    def __post_init__(self):
        if isinstance(self.dataset, str):
            self.dataset = [self.dataset] if self.dataset else []
        check_fields(self)
        check_trainer_args(self.args)
        if self.label not in ("soft", "hard"):
            raise ValueError(f"label must be 'soft' or 'hard', got {self.label!r}")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other")

    @property
    def seed(self) -> int:
        return int(self.args.get("seed", PRM_DEFAULTS["seed"]))


def training_args(cfg: TrainPRMConfig, has_eval: bool):
    from transformers import TrainingArguments

    kwargs = trainer_kwargs(
        cfg.args, {**PRM_DEFAULTS, "eval_strategy": "epoch" if has_eval else "no"}, cfg.dtype, cfg.output_dir
    )
    try:
        return TrainingArguments(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"transformers.TrainingArguments refused the training settings: {' '.join(str(err).split())[:300]}"
        ) from None


def run_dir(cfg: TrainPRMConfig) -> RunDir:
    return RunDir.for_config(cfg, "train-prm", OUTPUTS, TRAINER_RUN_CONTROL, resume=cfg.resume, overwrite=cfg.overwrite)


def tokenize_row(tokenizer, row: dict, separator: str, max_length: int, label_key: str = "labels") -> dict:
    """input_ids + float labels: the step label at each step's last separator token, IGNORE elsewhere."""
    enc = encode_steps(tokenizer, row["prompt"], row["completions"], separator, max_length)
    labels = [IGNORE] * len(enc.input_ids)
    for pos, lab in zip(enc.label_positions, row[label_key]):
        labels[pos] = float(lab)
    # The final label is the trace's outcome, used for within-problem pairs; -1 when truncation cut the last step.
    final = float(row[label_key][-1]) if len(enc.label_positions) == len(row["completions"]) else -1.0
    return {"input_ids": enc.input_ids, "labels": labels, "final": final}


def grouped_order(prompts: list[str], seed: int) -> list[int]:
    """Row indices with problems in random order and each problem's traces next to each other."""
    import random

    rows: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        rows.setdefault(p, []).append(i)
    order = list(rows)
    random.Random(seed).shuffle(order)
    return [i for p in order for i in rows[p]]


def pairwise_loss(
    logits: torch.Tensor, labels: torch.Tensor, group: torch.Tensor, final: torch.Tensor
) -> torch.Tensor | None:
    """Mean softplus(wrong - right) over pairs of a right (final >= 0.5) and a wrong (final < 0.5, >= 0)
    trace of the same problem in the batch, on each trace's last labelled score; None without pairs."""
    positions = torch.arange(labels.shape[1], device=labels.device).expand_as(labels)
    last = torch.where(labels != IGNORE, positions, -1).max(dim=1).values
    z = logits[..., 0].float()[torch.arange(len(last), device=labels.device), last.clamp(min=0)]
    right = (final >= 0.5) & (last >= 0)
    wrong = (final >= 0) & (final < 0.5) & (last >= 0)
    pairs = (group[:, None] == group[None, :]) & right[:, None] & wrong[None, :]
    if not pairs.any():
        return None
    margin = z[:, None] - z[None, :]
    return F.softplus(-margin[pairs]).mean()


class StepCollator:
    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE, dtype=torch.float)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            ids[i, :n], mask[i, :n], labels[i, :n] = torch.tensor(f["input_ids"]), 1, torch.tensor(f["labels"])
        batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        if "group" in features[0]:
            batch["group"] = torch.tensor([f["group"] for f in features], dtype=torch.long)
            batch["final"] = torch.tensor([f["final"] for f in features], dtype=torch.float)
        return batch


def step_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """BCE on labelled positions only (soft targets kept as they are)."""
    mask = labels != IGNORE
    if logits.shape[-1] == 1:
        return F.binary_cross_entropy_with_logits(logits[..., 0][mask].float(), labels[mask])
    # two-class heads (TRL format): cross-entropy against soft targets
    target = labels[mask]
    logp = torch.log_softmax(logits[mask].float(), -1)
    return -(target * logp[:, 1] + (1 - target) * logp[:, 0]).mean()


def _trainer_class(pairwise_weight: float = 0.0):
    from torch.utils.data import SequentialSampler
    from transformers import Trainer

    class PRMTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs.pop("labels")
            group, final = inputs.pop("group", None), inputs.pop("final", None)
            outputs = model(**inputs)
            loss = step_loss(outputs.logits, labels)
            if pairwise_weight and group is not None:
                ranking = pairwise_loss(outputs.logits, labels, group, final)
                if ranking is not None:
                    loss = loss + pairwise_weight * ranking
            return (loss, outputs) if return_outputs else loss

        def _get_train_sampler(self, *args, **kwargs):
            # the dataset is already in grouped_order: keep it, so a batch holds traces of the same problems
            if pairwise_weight:
                return SequentialSampler(self.train_dataset)
            return super()._get_train_sampler(*args, **kwargs)

    return PRMTrainer


def train_prm(cfg: TrainPRMConfig) -> dict:
    from transformers import AutoModelForTokenClassification, AutoTokenizer, set_seed
    from transformers.trainer_utils import get_last_checkpoint

    from synth.models import resolve_model
    from synth.prm.data import load_stepwise_many
    from synth.prm.token_cls import META
    from synth.train.data import split_by_problem

    if not cfg.dataset:
        raise ConfigError("train-prm needs --dataset (a stepwise dataset: prompt/completions/labels)")
    run = run_dir(cfg).check()
    set_seed(cfg.seed)
    ds = load_stepwise_many(cfg.dataset)
    label_key = (soft_label_column if cfg.label == "soft" else hard_label_column)(ds.column_names)
    train_ds, eval_ds = split_by_problem(ds, cfg.eval_fraction, cfg.seed)
    args = training_args(cfg, eval_ds is not None)
    base = resolve_model(cfg.model)
    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForTokenClassification.from_pretrained(base, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                task_type="TOKEN_CLS",
                r=cfg.lora_r,
                lora_alpha=cfg.lora_alpha,
                target_modules="all-linear",
                modules_to_save=["score"],
            ),
        )
    cols = ds.column_names
    group_of: dict[str, int] = {}
    if cfg.pairwise_weight:
        group_of = {p: i for i, p in enumerate(dict.fromkeys(ds["prompt"]))}
        train_ds = train_ds.select(grouped_order(train_ds["prompt"], cfg.seed))

    def tok(row):
        out = tokenize_row(tokenizer, row, cfg.step_separator, cfg.max_length, label_key)
        return {**out, "group": group_of[row["prompt"]]} if group_of else out

    train_tok = train_ds.map(tok, remove_columns=cols)
    eval_tok = eval_ds.map(tok, remove_columns=cols) if eval_ds is not None else None
    trainer = _trainer_class(cfg.pairwise_weight)(
        model=model,
        args=args,
        train_dataset=train_tok,
        eval_dataset=eval_tok,
        data_collator=StepCollator(tokenizer.pad_token_id),
    )
    with run.claim():
        last = get_last_checkpoint(str(run.path)) if cfg.resume else None
        result = trainer.train(resume_from_checkpoint=last)
        final = run.path / "final"
        trainer.save_model(str(final))
        tokenizer.save_pretrained(final)
        meta = {
            "format": "token-classification",
            "step_separator": cfg.step_separator,
            "base_model": cfg.model,
            "num_labels": 1,
        }
        cuts = set(ds["step_cut"]) if "step_cut" in ds.column_names else set()
        if len(cuts) == 1:  # the steps it learned to score: search warns when asked to score other ones
            meta["step_cut"] = cuts.pop()
        (final / META).write_text(json.dumps(meta, indent=2))
        metrics = {
            "train_loss": result.training_loss,
            "steps": result.global_step,
            "train_runtime_s": round(result.metrics.get("train_runtime", 0.0), 1),
        }
        if eval_ds is not None:
            from synth.prm.evaluate import step_auroc
            from synth.prm.load import load_prm

            metrics.update(step_auroc(load_prm(str(final)), eval_ds))
        (final / "metrics.json").write_text(json.dumps(metrics, indent=2))
    log.info("PRM saved to %s: %s", final, metrics)
    return metrics
