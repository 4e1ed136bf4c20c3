"""The Bradley–Terry reward model: its loss, the preference pairs, the baselines, the job, and one real training run.

The training test uses SYNTHETIC calculator episodes (``rewards.synthetic_episodes``: the scripted expert against
digit transpositions, played by the real runner and scored by the real reward actor), built so that neither length
nor a bag of words can tell chosen from rejected; the reward model has to read the question, the call and the
result together.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from actors.trajectory import check_invariants, check_rendering, write_parquet
from envs.calculator import generate_tasks
from envs.chat import render
from learners.reward_baselines import BagOfWords, LengthBaseline, pairwise_accuracy
from learners.reward_model import bt_loss
from rewards._examples import example_trajectory, tool_call
from rewards.preferences import (
    Preference,
    PreferenceFileError,
    build_preferences,
    preferences_from_run,
    read_preferences,
    write_preferences,
)
from rewards.synthetic_episodes import CORRUPTIONS, synthetic_episodes, synthetic_preferences

pytestmark = pytest.mark.timeout(120)


# ---- the loss ----


def test_bt_loss_matches_hand_values_and_gradient():
    r_chosen = torch.tensor([0.0, 2.0, -1.0], requires_grad=True)
    r_rejected = torch.tensor([0.0, 0.0, 0.0])
    loss = bt_loss(r_chosen, r_rejected)
    by_hand = (math.log(2) + math.log(1 + math.exp(-2)) + math.log(1 + math.e)) / 3
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)
    loss.backward()
    # d/d r_chosen of -log sigmoid(d) is -(1 - sigmoid(d)), averaged over the 3 pairs.
    expected = [-(1 - 1 / (1 + math.exp(-d))) / 3 for d in (0.0, 2.0, -1.0)]
    assert r_chosen.grad.tolist() == pytest.approx(expected, rel=1e-5)
    # Only the difference counts: shifting both rewards changes nothing.
    assert bt_loss(r_chosen + 5, r_rejected + 5).item() == pytest.approx(by_hand, rel=1e-6)


# ---- preference pairs from crafted trajectories ----


def episode(group: str, reward: float, calls: int = 1, index: int = 0, status: str = "finished"):
    """A crafted episode: each call adds a turn of 6 completion tokens, so ``calls`` sets its length."""
    t = example_trajectory(calls=[tool_call("391")] * calls, final_answer=f"It is {reward}.", task_id=group)
    return dataclasses.replace(t, group_id=group, reward=reward, sample_index=index, status=status)


def test_pairs_are_best_vs_worst_ties_skipped_and_unmatched_lengths_counted():
    batch = [
        episode("best-worst", 0.5, index=0), episode("best-worst", 1.4, index=1), episode("best-worst", -0.2, index=2),
        episode("tie", 1.0, index=0), episode("tie", 1.0, index=1),
        episode("too-long", 1.0, calls=1, index=0), episode("too-long", 0.0, calls=4, index=1),
        episode("alone", 1.0),
        episode("broken", 1.0, index=0), episode("broken", 0.0, index=1, status="error"),
    ]
    pairs, stats = build_preferences(batch)
    assert [(p.group_id, p.reward_chosen, p.reward_rejected) for p in pairs] == [
        ("best-worst", 1.4, -0.2), ("too-long", 1.0, 0.0)]
    assert (stats.groups, stats.pairs, stats.ties, stats.length_unmatched) == (5, 2, 1, 0)
    assert (stats.singletons, stats.errors_skipped) == (2, 1)

    matched, stats = build_preferences(batch, length_tolerance=12)  # 18 extra tokens in the long one: dropped
    assert [p.group_id for p in matched] == ["best-worst"] and stats.length_unmatched == 1 and stats.pairs == 1


def test_length_matching_takes_the_widest_gap_that_fits():
    group = [episode("g", 1.4, calls=1, index=0), episode("g", 0.4, calls=1, index=1),
             episode("g", -0.2, calls=3, index=2)]
    (pair,), _ = build_preferences(group)
    assert (pair.reward_chosen, pair.reward_rejected) == (1.4, -0.2)
    (pair,), _ = build_preferences(group, length_tolerance=0)
    assert (pair.reward_chosen, pair.reward_rejected) == (1.4, 0.4)


def test_pair_texts_are_the_rendered_prompt_and_completions():
    best, worst = episode("g", 1.0, index=0), episode("g", 0.0, calls=2, index=1)
    (pair,), _ = build_preferences([worst, best])
    assert pair.prompt + pair.chosen == render(best.messages)
    assert pair.prompt + pair.rejected == render(worst.messages)
    assert pair.prompt == render(best.messages[:2], add_generation_prompt=True)
    assert pair.prompt.endswith("<|im_start|>assistant\n") and pair.chosen.startswith("<tool_call>")


# ---- Parquet ----


def test_parquet_round_trip_and_from_a_run_directory(tmp_path):
    batch = [episode("a", 1.0, index=0), episode("a", 0.0, calls=2, index=1),
             episode("b", 0.25, index=0), episode("b", 0.75, index=1)]  # exact in the float32 reward column
    pairs, _ = build_preferences(batch)
    assert read_preferences(write_preferences(pairs, tmp_path / "p.parquet")) == pairs
    write_parquet(batch[:2], tmp_path / "run" / "trajectories" / "step_00000.parquet")
    write_parquet(batch[2:], tmp_path / "run" / "trajectories" / "step_00001.parquet")
    from_run, stats = preferences_from_run(tmp_path / "run")
    assert from_run == pairs and stats.pairs == 2 and stats.groups == 2
    with pytest.raises(FileNotFoundError, match="from_trajectories"):
        preferences_from_run(tmp_path / "nowhere")


def test_bad_preference_files_name_the_rows_and_the_fix(tmp_path):
    rows = {"prompt": ["p", "p", "p", "p"], "chosen": ["a", None, "same", "a"], "rejected": ["b", "b", "same", "b"],
            "reward_chosen": [1.0, 1.0, 1.0, 0.0], "reward_rejected": [0.0, 0.0, 0.0, 1.0]}
    pq.write_table(pa.table(rows), tmp_path / "bad.parquet")
    with pytest.raises(PreferenceFileError) as info:
        read_preferences(tmp_path / "bad.parquet")
    text = str(info.value)
    assert "row 0" not in text and "row 1: chosen is null or empty" in text
    assert "row 2: chosen and rejected are the same text" in text
    assert "row 3: reward_rejected 1.0 > reward_chosen 0.0" in text and "swap" in text
    assert len(info.value.problems) == 3 and all("Fix:" in p for p in info.value.problems)

    pq.write_table(pa.table({"prompt": [1], "chosen": ["a"], "reward_chosen": ["high"]}), tmp_path / "types.parquet")
    with pytest.raises(PreferenceFileError) as info:
        read_preferences(tmp_path / "types.parquet")
    text = str(info.value)
    assert "missing required column(s) rejected" in text and "column 'prompt' has type int64, expected string" in text
    assert "column 'reward_chosen' has type string, expected a number" in text

    pq.write_table(pa.table({"prompt": ["p"], "chosen": ["a"], "rejected": ["b"]}), tmp_path / "bare.parquet")
    (bare,) = read_preferences(tmp_path / "bare.parquet")  # optional columns filled: task = prompt, 1.0 vs 0.0
    assert bare == Preference("p", "a", "b", task_id="p", group_id="", reward_chosen=1.0, reward_rejected=0.0)


# ---- the synthetic episodes and what the baselines can see in them ----


def test_synthetic_episodes_are_real_runner_episodes(tokenizer):
    tasks = generate_tasks(10, 5, "train")
    episodes = synthetic_episodes(tokenizer, tasks, kinds=CORRUPTIONS)
    assert len(episodes) == 20
    for t in episodes:
        assert check_invariants(t) == [] and check_rendering(t, tokenizer) == []
    experts, corrupted = episodes[:10], episodes[10:]
    assert all(e.reward == pytest.approx(1.4) and e.reward_breakdown["outcome"] == 1.0 for e in experts)
    assert all(c.reward < 1.0 and c.reward_breakdown["outcome"] == 0.0 for c in corrupted)
    played = Counter(json.loads(c.task_extra)["episode"] for c in corrupted)
    assert set(played) <= set(CORRUPTIONS) and len(played) >= 4
    _, stats = build_preferences(episodes, length_tolerance=4)
    assert stats.length_unmatched >= played["no_call"] + played["failed_call"]  # ~60 / ~20 tokens off: dropped


def test_default_corruptions_defeat_length_and_bag_of_words_but_failed_calls_do_not(tokenizer):
    def completions(pairs):
        return tuple(tokenizer([getattr(p, side) for p in pairs], add_special_tokens=False)["input_ids"]
                     for side in ("chosen", "rejected"))

    pairs, stats = synthetic_preferences(tokenizer, 40, seed=3, length_tolerance=0)
    assert stats.pairs == 40  # every default corruption keeps the length exactly
    chosen, rejected = completions(pairs)
    same_bag = sum(Counter(c) == Counter(r) for c, r in zip(chosen, rejected))
    assert same_bag >= 15  # every transposed answer: the same tokens in another order
    bow = BagOfWords.fit(chosen[:20], rejected[:20])
    assert pairwise_accuracy(bow.score(chosen[20:]), bow.score(rejected[20:])) <= 0.75

    failed, _ = synthetic_preferences(tokenizer, 40, seed=3, kinds=("failed_call",))
    chosen, rejected = completions(failed)
    bow = BagOfWords.fit(chosen[:20], rejected[:20])
    assert pairwise_accuracy(bow.score(chosen[20:]), bow.score(rejected[20:])) == 1.0  # "error" gives it away
    length = LengthBaseline.fit([len(c) for c in chosen[:20]], [len(r) for r in rejected[:20]])
    assert length.name == "shorter wins"


# ---- the job ----


def test_job_config_problems_are_reported_at_once(tmp_path, capsys):
    from jobs.config_loader import undocumented
    from jobs.train_reward_model import TrainRewardModelConfig, main

    assert not undocumented(TrainRewardModelConfig)
    bad = tmp_path / "bad.yaml"
    bad.write_text("pairs: missing.parquet\nsynthetic:\n  kinds: [typo]\neval_fraction: 1.5\ntrain:\n  lr: 0\n")
    assert main(["--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "set exactly one, got ['pairs', 'synthetic']" in err and "pairs: missing.parquet is not a file" in err
    assert "synthetic.kinds: unknown ['typo']" in err and "eval_fraction: must be in (0, 1)" in err
    assert "train.lr: must be > 0" in err
    assert main([]) == 2 and "set exactly one, got none" in capsys.readouterr().err


def test_job_holds_out_whole_tasks_of_a_run_and_of_a_pairs_file(tmp_path, tokenizer):
    from jobs.train_reward_model import TrainRewardModelConfig, load_pairs

    episodes = synthetic_episodes(tokenizer, generate_tasks(30, 0, "train"), kinds=CORRUPTIONS)
    write_parquet(episodes, tmp_path / "run" / "trajectories" / "step_00000.parquet")
    cfg = TrainRewardModelConfig(from_trajectories=str(tmp_path / "run"), length_tolerance=4, eval_fraction=0.3)
    train, held, data = load_pairs(cfg, tokenizer)
    assert data["source"] == "trajectories" and data["groups"] == 30 and data["length_unmatched"] > 0
    assert len(train) + len(held) == data["pairs"] and train and held
    assert not {p.task_id for p in train} & {p.task_id for p in held}
    write_preferences(train + held, tmp_path / "pairs.parquet")
    from_file = TrainRewardModelConfig(pairs=str(tmp_path / "pairs.parquet"), eval_fraction=0.3)
    assert load_pairs(from_file, tokenizer)[:2] == (train, held)


@pytest.mark.timeout(600)
def test_reward_model_learns_what_length_and_bag_of_words_cannot(tmp_path):
    """192 pairs of 128 tokens, SmolLM2-135M with LoRA on its top 8 layers: about 1.5 minutes on 2 cores."""
    from jobs.train_reward_model import main
    from rewards.reward_model_scorer import RewardModelScorer, reward_model

    assert main(["--config", "configs/reward_model.yaml", f"storage={tmp_path}"]) == 0
    (run_dir,) = tmp_path.iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    ev = metrics["eval"]
    assert metrics["training"]["pairs"] + ev["eval_pairs"] <= 200 and metrics["training"]["final_loss"] < 0.69
    assert ev["reward_model"]["accuracy"] >= 0.9, ev
    assert ev["reward_model"]["accuracy"] >= ev["length"]["accuracy"] + 0.1, ev
    assert ev["reward_model"]["accuracy"] >= ev["bag_of_words"]["accuracy"] + 0.1, ev

    # The saved model, loaded the way the reward actor would, ranks a held-out expert above its corruption.
    model_dir = run_dir / "model"
    assert {"adapter_config.json", "adapter_model.safetensors", "score_head.safetensors"} <= {
        p.name for p in model_dir.iterdir()}
    held = read_preferences(run_dir / "pairs_eval.parquet")
    assert len(held) == ev["eval_pairs"]
    assert json.loads((model_dir / "adapter_config.json").read_text())["r"] == 8
    scorer = RewardModelScorer(model_dir)
    assert scorer.model.max_tokens == 128
    tasks = generate_tasks(4, 1, "test")  # held-out tasks: the eval pairs' seed and split
    episodes = synthetic_episodes(scorer.model.tokenizer, tasks)  # 4 experts, then their 4 corruptions
    scores = scorer.score_batch(episodes)
    assert all(scores[i] > scores[i + 4] for i in range(4)), scores
    # The SCORERS entry loads the same model once and scores one episode per call.
    assert reward_model(episodes[0], tasks[0], path=str(model_dir)) == pytest.approx(scorer(episodes[0]), abs=1e-4)
    # And through the config, as the reward actor combines it with the verifier.
    from rewards.config import RewardConfig
    from rewards.scorers import combine

    cfg = RewardConfig(weights={"reward_model": 0.5}, reward_model_path=str(model_dir))
    assert cfg.validate() == []
    total, parts = combine(episodes[0], tasks[0], cfg)
    assert "reward_model_error" not in parts and parts["reward_model"] == pytest.approx(scorer(episodes[0]), abs=1e-4)
    assert total == pytest.approx(parts["outcome"] + 0.1 * parts["format"] + parts["tool_use"]
                                  + 0.5 * parts["reward_model"], abs=1e-4)
