"""`synth rounds` end to end on a tiny random Llama (verification faked), resume, config validation."""

import json
import shutil

import pytest

import synth.train.rounds as rounds_mod
from synth.config import ConfigError, from_dict
from synth.generate.run import GenerateConfig
from synth.generate.search import SearchConfig
from synth.hub import PushError
from synth.prm.label import LabelConfig
from synth.prm.train import TrainPRMConfig
from synth.problems import PoolConfig
from synth.train.rounds import Rounds, RoundsConfig
from synth.train.sft import TrainConfig

STAGES_K = ("generate", "sft_data", "label", "prm", "sft", "eval_greedy", "eval_search")


@pytest.fixture(scope="module")
def stopping_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model, but every 5th token id ends a completion, so its random text often finishes."""
    from transformers import GenerationConfig

    out = tmp_path_factory.mktemp("tiny-stopping")
    shutil.copytree(tiny_model_dir, out, dirs_exist_ok=True)
    gen = GenerationConfig.from_pretrained(out)
    gen.eos_token_id = [2] + list(range(5, 49152, 5))
    gen.save_pretrained(out)
    return str(out)


@pytest.fixture
def fake_verification(monkeypatch):
    """Random text has no answers: every completion answers '7', and every other one counts as verified."""
    alternate = lambda answers, problems: [i % 2 == 0 for i in range(len(answers))]  # noqa: E731
    monkeypatch.setattr("synth.generate.search.extract_answer", lambda text: "7")
    monkeypatch.setattr("synth.generate.run.verify_answers", alternate)
    monkeypatch.setattr("synth.prm.label.extract_answer", lambda text: "7")
    monkeypatch.setattr("synth.prm.label.verify_answers", alternate)


def tiny_cfg(tmp_path, model, **kw) -> RoundsConfig:
    args = dict(
        model=model,
        rounds=2,
        output_dir=str(tmp_path / "rounds"),
        top_k=2,
        eval_n=2,
        train_prm=True,
        train_pool=PoolConfig(tasks=["basic_arithmetic"], num_problems=4, seed=200),
        eval_pool=PoolConfig(tasks=["basic_arithmetic"], num_problems=3, seed=1000),
        generate=GenerateConfig(
            batch_size=16, problems_per_batch=4, search=SearchConfig(n=4, max_tokens=12, temperature=1.0)
        ),
        sft=TrainConfig(
            eval_fraction=0.25,
            args={
                "learning_rate": 1e-2,
                "num_train_epochs": 3,
                "per_device_train_batch_size": 2,
                "logging_steps": 1,
                "save_steps": 1000,
            },
        ),
        label=LabelConfig(rollouts=2, max_tokens=6, traces_per_problem=2),
        prm_train=TrainPRMConfig(
            eval_fraction=0.0, args={"num_train_epochs": 1, "per_device_train_batch_size": 4, "save_steps": 1000}
        ),
    )
    return RoundsConfig(**{**args, **kw})


def markers(root):
    return {p.relative_to(root).as_posix(): p.read_text() for p in sorted(root.glob("round-*/*/done.json"))}


def test_two_rounds_end_to_end_then_resume(tmp_path, stopping_model_dir, fake_verification, monkeypatch):
    cfg = tiny_cfg(tmp_path, stopping_model_dir, n_per_round=[4, 2], push_to_hub=True, hub_dataset_id="me/arith-rounds")
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    root = tmp_path / "rounds"
    real_sft = rounds_mod.train_sft
    pushes = []

    def push_offline_once(local, repo_id, private=False, revision=None, **kw):
        pushes.append(revision)
        if len(pushes) == 1:
            raise PushError("cannot reach the Hub")
        assert "## Rounds report" in (local / "README.md").read_text() and repo_id == "me/arith-rounds"
        return f"https://huggingface.co/datasets/{repo_id}/tree/{revision}"

    monkeypatch.setattr("synth.hub.push_dataset", push_offline_once)

    def sft_interrupted_in_round_2(c, *a, **kw):
        if "round-2" in c.output_dir:
            raise KeyboardInterrupt
        return real_sft(c, *a, **kw)

    monkeypatch.setattr(rounds_mod, "train_sft", sft_interrupted_in_round_2)
    first = Rounds(cfg)
    with pytest.raises(KeyboardInterrupt):
        first.run()
    policies = [x for x in first.models.loads if x.startswith("policy:")]
    assert len(policies) == len(set(policies)) == 2  # base, then round 1's model: each loaded once
    before = markers(root)
    assert "round-0/eval_search/done.json" in before and "round-2/prm/done.json" in before
    assert all(f"round-1/{s}/done.json" in before for s in STAGES_K)
    assert "round-2/sft/done.json" not in before
    assert (root / "report.md").read_text().count("\n| 1 |") == 1  # rewritten after round 1
    assert pushes == ["round-1"] and not (root / "round-1/push").exists()  # offline: logged, retried on rerun
    card = (root / "round-1/sft_data/README.md").read_text()
    assert card.count("## Rounds report") == 1 and "\n| 1 |" in card

    # round 1's SFT learnt something and left a plain checkpoint
    sft1 = json.loads((root / "round-1/sft/metrics.json").read_text())
    assert sft1["losses"][-1] < sft1["losses"][0] and sft1["eval_loss"] is not None
    assert (root / "round-1/sft/final/config.json").exists() and not (
        root / "round-1/sft/final/adapter_config.json"
    ).exists()
    assert (root / "round-1/prm/final/synth_prm.json").exists()
    assert json.loads((root / "round-1/sft_data/done.json").read_text())["result"]["examples"] > 0

    # rerun: only round 2's sft and evals run; nothing finished is recomputed
    monkeypatch.setattr(rounds_mod, "train_sft", real_sft)
    calls = []
    real_generate = rounds_mod.generate
    monkeypatch.setattr(rounds_mod, "generate", lambda c, **kw: calls.append(c.output_dir) or real_generate(c, **kw))
    second = Rounds(cfg)
    rows = second.run()
    assert [c.split("rounds/")[1] for c in calls] == ["round-2/eval_greedy", "round-2/eval_search"]
    assert [x for x in second.models.loads if x.startswith("policy:")] == [f"policy:{root}/round-2/sft/final"]
    after = markers(root)
    assert {k: after[k] for k in before} == before
    assert set(after) - set(before) == {
        f"round-2/{s}/done.json" for s in ("sft", "eval_greedy", "eval_search", "push")
    } | {"round-1/push/done.json"}
    assert pushes == ["round-1", "round-1", "round-2"]
    assert (root / "round-1/sft_data/README.md").read_text().count("## Rounds report") == 1  # replaced, not appended
    assert "\n| 2 |" in (root / "round-2/sft_data/README.md").read_text()

    # every round trained on its own data (no stale `datasets` cache of an earlier round's dir)
    for k in (1, 2):
        sft = json.loads((root / f"round-{k}/sft/metrics.json").read_text())
        data = json.loads((root / f"round-{k}/sft_data/done.json").read_text())["result"]
        assert sft["examples"] + sft["eval_examples"] == data["examples"]
    labels = [json.loads(x) for x in (root / "round-2/label/rows.jsonl").read_text().splitlines()]
    gen2 = [json.loads(x) for x in (root / "round-2/generate/rows.jsonl").read_text().splitlines()]
    assert all(len(g["completions"]) == 2 for g in gen2)  # n_per_round: round 2 searched at N=2 (round 1 at 4)
    assert all(
        len(json.loads(x)["completions"]) == 4 for x in (root / "round-1/generate/rows.jsonl").read_text().splitlines()
    )
    assert labels and all(r["policy"].endswith("round-1/sft/final") for r in labels)
    assert all(r["completions"] in [s for g in gen2 for s in g["steps"]] for r in labels)  # round 2's own traces
    first_gen = (root / "round-1/generate/rows.jsonl").read_text()
    assert json.loads((root / "round-2/sft_data/done.json").read_text())["result"]["pool_problems"] == len(
        first_gen.splitlines()
    )

    assert [r["round"] for r in rows] == [0, 1, 2]
    assert all(r["greedy"] is not None and r["maj"] is not None and r["pass"] is not None for r in rows)
    assert rows[2]["policy"].endswith("round-2/sft/final")
    report = (root / "report.md").read_text()
    assert "greedy acc" in report and "maj@2" in report and "\n| 2 |" in report and "Held-out greedy accuracy" in report
    assert (root / "rounds.png").stat().st_size > 0
    # from_base: every round starts from the base model
    assert json.loads((root / "round-2/sft/done.json").read_text())["result"]["init"] == stopping_model_dir


def test_rerun_with_another_config_is_refused(tmp_path, stopping_model_dir, fake_verification):
    cfg = tiny_cfg(tmp_path, stopping_model_dir, train_prm=False)
    cfg.rounds = 0
    rows = Rounds(cfg).run()
    assert len(rows) == 1 and rows[0]["greedy"] is not None
    cfg.rounds = 1  # growing the number of rounds is a continuation
    cfg.eval_n = 4
    with pytest.raises(ConfigError, match="made with another config"):
        Rounds(cfg)


def test_no_verified_traces_keeps_the_policy(tmp_path, stopping_model_dir, monkeypatch):
    monkeypatch.setattr("synth.generate.run.verify_answers", lambda answers, problems: [False] * len(answers))
    cfg = tiny_cfg(tmp_path, stopping_model_dir, train_prm=False)
    cfg.rounds = 1
    rows = Rounds(cfg).run()
    assert rows[1]["sft_examples"] == 0 and rows[1]["policy"] == stopping_model_dir


@pytest.mark.parametrize(
    "data,msg",
    [
        ({}, "held out"),
        ({"train_pool": {"seed": 200}, "eval_pool": {"seed": 200}}, "held out"),
        ({"eval_pool": {"seed": 1}, "search": {"strategy": "beam_search"}}, "needs a PRM"),
        (
            {
                "eval_pool": {"seed": 1},
                "prm": "default",
                "search": {"strategy": "beam_search", "n": 8, "beam_width": 4},
                "eval_n": 6,
            },
            "eval_n 6",
        ),
        ({"eval_pool": {"seed": 1}, "sft": {"dataset": "x"}}, "sft.dataset is set by rounds"),
        ({"eval_pool": {"seed": 1}, "prm_train": {"model": "y"}}, "prm_train.model is set by rounds"),
        ({"eval_pool": {"seed": 1}, "rounds": -1}, "rounds must be"),
        ({"eval_pool": {"seed": 1}, "n_per_round": []}, "n_per_round"),
        (
            {
                "eval_pool": {"seed": 1},
                "prm": "default",
                "search": {"strategy": "beam_search", "n": 8, "beam_width": 4},
                "n_per_round": [8, 6],
            },
            "n_per_round 6",
        ),
        ({"eval_pool": {"seed": 1}, "push_to_hub": "no-slash"}, "push_to_hub"),
        ({"eval_pool": {"seed": 1}, "sft": {"dtype": "int8"}}, "dtype"),
        ({"eval_pool": {"seed": 1}, "dtype": "foo"}, "dtype: .* is not one of"),
        ({"eval_pool": {"seed": 1}, "sft": {"learning_rat": 1}}, "did you mean 'sft.learning_rate'"),
    ],
)
def test_config_validation(data, msg):
    with pytest.raises(ConfigError, match=msg):
        from_dict(RoundsConfig, data)


def test_recipe_loads():
    from synth.config import load_yaml

    cfg = from_dict(RoundsConfig, load_yaml("configs/rounds-smollm2.yaml"))
    assert cfg.rounds == 2 and cfg.train_pool.seed == 200 and cfg.eval_pool.seed == 1000


def test_held_out_problems_never_reach_sft_data(tmp_path):
    """A training row whose problem text is a held-out problem (planted) is dropped and counted."""
    from synth.journal import Journal
    from synth.problems import load_pool

    cfg = tiny_cfg(tmp_path, "unused")
    held = load_pool(cfg.eval_pool)[0]
    row = lambda i, problem: {
        "id": f"p{i}",
        "problem": problem,
        "gold_answer": "7",
        "source": "t",
        "model": "m",  # noqa: E731
        "completions": ["x = 7"],
        "verified": [True],
        "finished": [True],
        "num_tokens": [3],
    }
    gen = tmp_path / "gen"
    gen.mkdir()
    journal = Journal(gen / "rows.jsonl")
    journal.append([row(0, "What is 123456 + 654321?"), row(1, "  " + held.problem.upper() + " ")])
    out = Rounds(cfg)._sft_data(tmp_path / "sft_data", gen)
    assert out["examples"] == 1 and out["held_out_overlap"] == 1 and out["pool_problems"] == 2


def test_rounds_reaches_the_vllm_engine_with_its_settings(tmp_path, tiny_model_dir, monkeypatch):
    """`--generate.engine vllm` (and the vllm: settings) reach the engine rounds builds for every stage."""
    from synth.config import parse_cli

    built = []

    class Built(Exception):
        pass

    class FakeVLLMPolicy:
        def __init__(self, model_path, system_prompt=None, dtype="float32", seed=0, options=None):
            built.append((model_path, dtype, options))
            raise Built

    monkeypatch.setattr("synth.generate.run.vllm_available", lambda: True)
    monkeypatch.setattr("synth.generate.vllm.VLLMPolicy", FakeVLLMPolicy)
    cfg = parse_cli(
        RoundsConfig,
        [
            "--model",
            tiny_model_dir,
            "--rounds",
            "0",
            "--output_dir",
            str(tmp_path / "r"),
            "--train_pool.seed",
            "200",
            "--eval_pool.seed",
            "1000",
            "--generate.engine",
            "vllm",
            "--generate.vllm.kv_cache_gib",
            "2",
            "--generate.dtype",
            "bfloat16",
        ],
    )
    with pytest.raises(Built):
        Rounds(cfg).run()
    assert built == [(tiny_model_dir, "bfloat16", cfg.generate.vllm)] and built[0][2].kv_cache_gib == 2.0


def test_old_top_level_generate_settings_still_load():
    cfg = from_dict(RoundsConfig, {"eval_pool": {"seed": 1}, "seed": 3, "batch_size": 8, "search": {"n": 4}})
    assert cfg.generate.seed == 3 and cfg.generate.batch_size == 8 and cfg.search.n == 4


def test_named_eval_pools_each_round_and_select_round(tmp_path, stopping_model_dir, fake_verification):
    pools = {
        "in_dist": PoolConfig(tasks=["basic_arithmetic"], num_problems=3, seed=1000),
        "ood": PoolConfig(tasks=["chain_sum"], num_problems=4, seed=1001),
    }
    cfg = tiny_cfg(
        tmp_path,
        stopping_model_dir,
        train_prm=False,
        rounds=1,
        eval_pool=PoolConfig(),
        eval_pools=pools,
        select_round="ood",
    )
    root = tmp_path / "rounds"
    rows = Rounds(cfg).run()
    for k in (0, 1):
        for name in pools:
            for kind in ("greedy", "search"):
                assert (root / f"round-{k}/eval_{kind}-{name}/done.json").exists()
        assert not (root / f"round-{k}/eval_greedy").exists()
    assert {r["pools"]["ood"]["problems"] for r in rows} == {4} and rows[0]["greedy"] == rows[0]["pools"]["in_dist"][
        "greedy"
    ]
    best = max(rows, key=lambda r: (r["pools"]["ood"]["greedy"], -r["round"]))
    selected = json.loads((root / "selected.json").read_text())
    assert selected["pool"] == "ood" and selected["round"] == best["round"]
    assert selected["policy"] == (stopping_model_dir if best["round"] == 0 else rows[1]["policy"])
    report = (root / "report.md").read_text()
    assert "in_dist (3): greedy, vs round 0, search" in report and "ood (4)" in report
    assert f"Output policy: round {best['round']} (best greedy accuracy on `ood`)" in report
    # the gain is paired over the same problems: recompute it from the per-problem results
    before, after = rows[0]["pools"]["ood"]["correct"], rows[1]["pools"]["ood"]["correct"]
    assert len(before) == 4 and f"{sum(after.values()) / 4 - sum(before.values()) / 4:+.3f} ± " in report


def test_held_out_removal_covers_every_eval_pool(tmp_path):
    from synth.journal import Journal
    from synth.problems import load_pool

    pools = {"a": PoolConfig(num_problems=3, seed=1000), "b": PoolConfig(tasks=["chain_sum"], num_problems=3, seed=7)}
    cfg = tiny_cfg(tmp_path, "unused", eval_pool=PoolConfig(), eval_pools=pools)
    planted = [load_pool(p)[0].problem for p in pools.values()]
    gen = tmp_path / "gen"
    gen.mkdir()
    row = dict(gold_answer="7", source="t", model="m", completions=["x = 7"], verified=[True], finished=[True])
    Journal(gen / "rows.jsonl").append([{**row, "id": f"p{i}", "problem": text} for i, text in enumerate(planted)])
    out = Rounds(cfg)._sft_data(tmp_path / "sft_data", gen)
    assert out["examples"] == 0 and out["held_out_overlap"] == 2


@pytest.mark.parametrize(
    "data,msg",
    [
        ({"eval_pool": {"seed": 1}, "eval_pools": {"x": {"seed": 2}}}, "not both"),
        ({"eval_pools": {"ood": {"seed": 0}}}, "eval_pools.ood must be held out"),
        ({"eval_pools": {"Bad Name": {"seed": 3}}}, "pool name"),
        ({"eval_pools": {"ood": {"seed": 3, "num_problem": 2}}}, "eval_pools.ood.num_problem"),
        (
            {"eval_pools": {"ood": {"seed": 3}}, "select_round": "in_dist"},
            "select_round: 'in_dist' is not an eval pool",
        ),
    ],
)
def test_eval_pools_validation(data, msg):
    with pytest.raises(ConfigError, match=msg):
        from_dict(RoundsConfig, data)


def test_eval_pools_from_a_recipe_and_the_command_line(tmp_path):
    from synth.config import dump_yaml, parse_cli

    recipe = tmp_path / "r.yaml"
    recipe.write_text("eval_pools:\n  in_dist: {seed: 1000, num_problems: 8}\n  ood: {tasks: [chain_sum], seed: 5}\n")
    cfg = parse_cli(
        RoundsConfig, ["--config", str(recipe), "--eval_pools", "{ood: {seed: 6}}", "--select_round", "ood"]
    )
    assert (
        cfg.pools["in_dist"].num_problems == 8
        and cfg.pools["ood"].seed == 6
        and cfg.pools["ood"].tasks == ["chain_sum"]
    )
    again = from_dict(RoundsConfig, __import__("yaml").safe_load(dump_yaml(cfg)))
    assert again.pools == cfg.pools and again.select_round == "ood"


def test_greedy_only_evaluation(tmp_path, stopping_model_dir, fake_verification):
    cfg = tiny_cfg(tmp_path, stopping_model_dir, train_prm=False, rounds=0, eval_search=False)
    rows = Rounds(cfg).run()
    root = tmp_path / "rounds"
    assert rows[0]["greedy"] is not None and rows[0]["maj"] is None
    assert (root / "round-0/eval_greedy/done.json").exists() and not (root / "round-0/eval_search").exists()
    assert "| 0 |" in (root / "report.md").read_text()
