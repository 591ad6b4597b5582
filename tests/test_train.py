"""`synth train`: SFT data, completion-only loss masking, full and LoRA training, resume, errors."""

import json

import pytest
from datasets import Dataset

from synth.commands.cli import main as cli
from synth.config import ConfigError, from_dict
from synth.filter.run import FilterConfig, select
from synth.filter.select import Filters, flatten
from synth.formats import FormatError
from synth.train.data import as_sft, load_sft, split_by_problem
from synth.train.sft import TrainConfig, build_trainer, train_sft


def sft_rows(n=16):
    """A learnable toy task: the same answer pattern for every problem."""
    return [
        {
            "prompt": [{"role": "user", "content": f"What is {i} + 1?"}],
            "completion": [{"role": "assistant", "content": f"{i} + 1 = {i + 1}. The answer is $\\boxed{{{i + 1}}}$."}],
        }
        for i in range(n)
    ]


def gen_row(pid, completions, verified, finished=None, tokens=None):
    n = len(completions)
    return {
        "id": pid,
        "problem": f"problem {pid}",
        "gold_answer": "1",
        "source": "t",
        "completions": completions,
        "verified": verified,
        "finished": finished or [True] * n,
        "num_tokens": tokens or [len(c) for c in completions],
    }


# ---------------------------------------------------------------- data


def sft_examples(rows, top_k, system_prompt=None):
    """What `synth rounds` trains on: the filter pipeline keeping the top_k shortest verified traces."""
    filters = Filters(correctness="verified", near_dup_threshold=None, top_k=top_k, rank_by="shortest")
    return select(flatten(rows), FilterConfig(format="sft", system_prompt=system_prompt, filters=filters))[0]


def test_sft_examples_keep_verified_finished_unique_shortest():
    rows = [
        gen_row(
            "a",
            ["long correct answer", "short ok", "short ok", "wrong", "cut off", ""],
            [True, True, True, False, True, True],
            finished=[True, True, True, True, False, True],
        ),
        gen_row("b", ["x"], [False]),
    ]
    for row in rows:
        row["answers"] = ["1"] * len(row["completions"])
    out = sft_examples(rows, top_k=2, system_prompt="Be brief.")
    assert sorted(e["completion"][0]["content"] for e in out) == ["long correct answer", "short ok"]
    assert out[0]["prompt"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "problem a"}]
    assert sft_examples(rows, top_k=1)[0]["prompt"] == [{"role": "user", "content": "problem a"}]
    assert [e["completion"][0]["content"] for e in sft_examples(rows, top_k=1)] == ["short ok"]


def test_plain_strings_become_conversational():
    ds = as_sft(Dataset.from_list([{"prompt": "1+1?", "completion": "2", "extra": 0}]))
    assert ds.column_names == ["prompt", "completion"]
    assert ds[0]["prompt"] == [{"role": "user", "content": "1+1?"}]
    assert ds[0]["completion"] == [{"role": "assistant", "content": "2"}]


@pytest.mark.parametrize(
    "rows,msg",
    [
        ([{"prompt": "q", "response": "a"}], r"missing column\(s\) \['completion'\]"),
        ([{"prompt": "q", "completion": " "}], "row 0 has an empty completion"),
    ],
)
def test_bad_sft_datasets(rows, msg):
    with pytest.raises(FormatError, match=msg):
        as_sft(Dataset.from_list(rows))


def test_empty_and_missing_datasets(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(FormatError, match="empty"):
        load_sft(str(empty))
    with pytest.raises(FormatError, match="empty"):
        as_sft(Dataset.from_dict({"prompt": [], "completion": []}))
    with pytest.raises(FormatError, match="not found"):
        load_sft(str(tmp_path / "nope"))


def test_load_a_synth_dataset_dir_reads_its_own_files(tmp_path):
    """Two dirs with the same name must not share the `datasets` cache."""
    from synth.hub import write_dataset

    for name, n in (("a", 3), ("b", 5)):
        write_dataset(sft_rows(n), tmp_path / name / "sft_data", {"name": "t"})
        assert len(load_sft(str(tmp_path / name / "sft_data"))) == n


def test_split_holds_out_whole_problems():
    rows = sft_rows(10) + sft_rows(10)  # every prompt twice
    train, held = split_by_problem(Dataset.from_list(rows), 0.2, seed=0)
    key = lambda ds: {json.dumps(p) for p in ds["prompt"]}  # noqa: E731
    assert len(held) == 4 and not key(train) & key(held)
    assert split_by_problem(Dataset.from_list(rows), 0.0, 0)[1] is None


# ---------------------------------------------------------------- masking


def test_completion_only_loss_masks_exactly_the_prompt(tmp_path, tiny_model_dir, tokenizer):
    rows = sft_rows(3)
    trainer = build_trainer(
        TrainConfig(model=tiny_model_dir, output_dir=str(tmp_path / "o"), eval_fraction=0.0), Dataset.from_list(rows)
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    for i, row in enumerate(rows):
        prompt = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
        n_prompt = len(tokenizer(prompt, add_special_tokens=False).input_ids)
        n_full = len(tokenizer(full, add_special_tokens=False).input_ids)
        ids, labels = batch["input_ids"][i].tolist(), batch["labels"][i].tolist()
        assert labels[:n_prompt] == [-100] * n_prompt
        assert labels[n_prompt:n_full] == ids[n_prompt:n_full]
        assert labels[n_full:] == [-100] * (len(labels) - n_full)  # padding
        # the trained tokens are the completion and the end of its turn
        assert tokenizer.decode(ids[n_prompt:n_full]) == row["completion"][0]["content"] + "<|im_end|>\n"


def test_bf16_mixed_precision_trains_without_a_gpu(tmp_path, tiny_model_dir):
    """transformers refuses bf16 without an accelerator unless told to use the CPU."""
    trainer = build_trainer(
        TrainConfig(
            model=tiny_model_dir,
            output_dir=str(tmp_path / "o"),
            eval_fraction=0.0,
            dtype="bfloat16",
            args={"num_train_epochs": 1, "per_device_train_batch_size": 4},
        ),
        Dataset.from_list(sft_rows(4)),
    )
    assert trainer.args.bf16
    trainer.train()


# ---------------------------------------------------------------- training


class InterruptAt:
    """A TrainerCallback that raises KeyboardInterrupt once `step` is reached (after its checkpoint)."""

    def __new__(cls, step):
        from transformers import TrainerCallback

        class _Interrupt(TrainerCallback):
            def on_save(self, args, state, control, **kw):
                if state.global_step >= step:
                    raise KeyboardInterrupt

        return _Interrupt()


def test_full_sft_loss_falls_and_resumes_after_interrupt(tmp_path, tiny_model_dir):
    from synth.generate.engine import SamplingParams
    from synth.generate.hf import TransformersPolicy

    out = tmp_path / "sft"
    cfg = TrainConfig(
        model=tiny_model_dir,
        output_dir=str(out),
        eval_fraction=0.25,
        args={
            "learning_rate": 1e-2,
            "num_train_epochs": 3,
            "per_device_train_batch_size": 4,
            "logging_steps": 1,
            "save_steps": 2,
        },
    )
    with pytest.raises(KeyboardInterrupt):
        train_sft(cfg, Dataset.from_list(sft_rows()), callbacks=[InterruptAt(2)])
    assert (out / "checkpoint-2").exists() and not (out / "final").exists()
    with pytest.raises(ConfigError, match="--resume true"):
        train_sft(cfg, Dataset.from_list(sft_rows()))
    cfg.resume = True
    metrics = train_sft(cfg, Dataset.from_list(sft_rows()))
    assert metrics["steps"] == 9 and metrics["examples"] == 12 and metrics["eval_examples"] == 4
    state = json.loads((out / "checkpoint-9" / "trainer_state.json").read_text())
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert len(losses) == 9 and losses[-1] < losses[0]
    assert metrics["eval_loss"] is not None and metrics["tokens_per_s"] > 0
    assert json.loads((out / "metrics.json").read_text())["train_loss"] == pytest.approx(metrics["train_loss"])
    assert train_sft(cfg, Dataset.from_list(sft_rows())) == json.loads(
        (out / "metrics.json").read_text()
    )  # done: no-op
    # final/ is a plain checkpoint with the tokenizer: a policy loads it
    policy = TransformersPolicy(str(out / "final"))
    assert policy.model.config.use_cache
    assert len(policy.generate([policy.chat_prompt("What is 3 + 1?")], SamplingParams(n=1, max_tokens=4))[0]) == 1


def test_lora_sft_is_merged_into_a_plain_checkpoint(tmp_path, tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lora"
    cfg = TrainConfig(
        model=tiny_model_dir,
        output_dir=str(out),
        lora=True,
        lora_r=4,
        lora_alpha=8,
        eval_fraction=0.0,
        args={"learning_rate": 5e-2, "num_train_epochs": 1, "per_device_train_batch_size": 8, "logging_steps": 1},
    )
    metrics = train_sft(cfg, Dataset.from_list(sft_rows()))
    assert metrics["eval_loss"] is None
    final = out / "final"
    assert (final / "config.json").exists() and (final / "tokenizer_config.json").exists()
    assert not (final / "adapter_config.json").exists()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tuned = AutoModelForCausalLM.from_pretrained(final)
    assert not any("lora" in k for k in tuned.state_dict())
    b, t = base.state_dict(), tuned.state_dict()
    assert not torch.equal(b["model.layers.0.self_attn.q_proj.weight"], t["model.layers.0.self_attn.q_proj.weight"])


# ---------------------------------------------------------------- config and CLI


@pytest.mark.parametrize(
    "data,msg",
    [
        ({"dtype": "int4"}, "dtype: .* is not one of"),
        ({"eval_fraction": 1.0}, "eval_fraction"),
        ({"batch_size": 0}, "per_device_train_batch_size must be a number > 0"),
        ({"bf16": True}, "set by synth"),
        ({"learning_rat": 1e-5}, "did you mean 'learning_rate'"),
    ],
)
def test_train_config_validation(data, msg):
    with pytest.raises(ConfigError, match=msg):
        from_dict(TrainConfig, data)


def test_train_cli_help_and_errors(tmp_path, capsys):
    assert cli(["train", "--help"]) == 0
    out = capsys.readouterr().out
    for opt in ("--dataset", "--lora", "--lora_r", "--eval_fraction", "--resume", "--dtype", "trl.SFTConfig"):
        assert opt in out
    assert cli(["train", "--output_dir", str(tmp_path / "o")]) == 2
    assert "train needs --dataset" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    assert cli(["train", "--dataset", str(bad), "--output_dir", str(tmp_path / "o")]) == 2
    assert "missing column(s) ['prompt', 'completion']" in capsys.readouterr().err


def test_rounds_cli_help(capsys):
    assert cli(["rounds", "--help"]) == 0
    out = capsys.readouterr().out
    for opt in (
        "--from_base",
        "--train_prm",
        "--eval_n",
        "--train_pool.seed",
        "--eval_pool.seed",
        "--sft.lora",
        "--generate.search.n",
        "--generate.engine",
    ):
        assert opt in out
