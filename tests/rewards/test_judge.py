"""The LLM judge: rubric and rendering, score parsing, the fallback rule with real Ray actors as judges (one that
answers, one that sleeps past the timeout, one that raises), the config checks, and the rollout engine's base
model judging real prompts without a LoRA (integration)."""

from __future__ import annotations

import doctest
import time

import pytest

from jobs.config_loader import ConfigError, from_dict
from rewards import RewardActor, RewardConfig
from rewards import judge as judge_module
from rewards._examples import example_task, example_trajectory, tool_call
from rewards.judge import (COUNTERS, RUBRIC, STEP_RUBRIC, episode_prompt, judge_value, parse_score,
                           render_conversation, step_prompts)

TASKS = {"a": example_task(answer=391)}
ON = {"judge": "rollout", "weights": {"judge": 0.3}}  # the judge handle is given to the actor directly


def batch():
    return [
        example_trajectory(calls=[tool_call("391")], final_answer="17 * 23 = 391.", task_id="a"),
        example_trajectory(calls=[tool_call("391")], final_answer="17 * 23 = 381.", task_id="a"),
        example_trajectory(final_answer=None, status="truncated", task_id="a"),
    ]


def test_doctests():
    assert doctest.testmod(judge_module).failed == 0


# ---- rubric, rendering, parsing (pure) ----


def test_episode_prompt_holds_the_rubric_and_the_whole_conversation():
    right = batch()[0]
    prompt = episode_prompt(right)
    for needle in ("Solved", "Tools", "Grounded", "<conversation>", "SCORE: <n>", "integer from 0 to 10"):
        assert needle in prompt
    assert "USER: What is?\nASSISTANT: <tool_call>" in prompt and prompt.count("TOOL RESULT: 391") == 1
    assert prompt.index("</conversation>") > prompt.index("ASSISTANT: 17 * 23 = 391.")
    own = episode_prompt(right, rubric="Rate it. {conversation} Last line SCORE: <n>")
    assert own.startswith("Rate it. SYSTEM: calculator\nUSER") and own.endswith("SCORE: <n>")


def test_conversation_braces_survive_and_long_episodes_keep_question_and_answer():
    messages = [{"role": "user", "content": "QUESTION {x}"}] + [
        {"role": "tool", "content": "{" + "y" * 200 + "}"}] * 50 + [{"role": "assistant", "content": "ANSWER {z}"}]
    text = render_conversation(messages, max_chars=1000)
    assert len(text) <= 1000 and text.startswith("USER: QUESTION {x}") and text.endswith("ASSISTANT: ANSWER {z}")
    assert "characters cut" in text
    assert "ANSWER: {conversation}" in episode_prompt(example_trajectory(final_answer="ANSWER: {conversation}"))
    assert render_conversation(messages[:2], max_chars=1000) == "USER: QUESTION {x}\nTOOL RESULT: {" + "y" * 200 + "}"


def test_step_prompts_mark_each_turn_with_its_tool_results():
    t = example_trajectory(calls=[tool_call("error: bad", ok=False), tool_call("391")], final_answer="391")
    prompts = step_prompts(t)
    assert len(prompts) == len(t.turns) == 3
    assert all(p.startswith(STEP_RUBRIC.split("{conversation}")[0]) for p in prompts)
    assert [p.count("(STEP TO GRADE)") for p in prompts] == [1, 1, 1]
    assert "TOOL RESULT: error: bad" in prompts[0] and "TOOL RESULT: 391" not in prompts[0]
    assert prompts[2].rstrip().endswith("is an integer from 0 to 10.") and "(STEP TO GRADE): 391" in prompts[2]


@pytest.mark.parametrize(("reply", "score"), [
    ("The call was right and the answer matches.\nSCORE: 8", 8.0),
    ("SCORE: 0", 0.0),
    ("score = 10/10", 10.0),
    ("Reasoning...\n**Score:** 6.5\n", 6.5),
    ("SCORE: 2\nwait, no.\nSCORE: 9", 9.0),  # the last one counts: the rubric asks for it on the last line
    ("", None),
    ("I cannot grade this.", None),
    ("SCORE: <n>", None),
    ("SCORE: 11", None),
    ("SCORE: -3", None),
    ("SCORE: 4/5", None),
    ("SCORE: 10000000000000000000000", None),
])
def test_parse_score(reply, score):
    assert parse_score(reply) == score
    assert judge_value(reply) == (None if score is None else score / 10)


# ---- the fallback rule, with real Ray actors as judges ----


class Judge:
    """A judge that needs no engine: its replies depend on the prompt (a right answer gets 9), so a mix-up between
    prompts and replies shows."""

    def __init__(self, mode: str = "answer", sleep_s: float = 0.0):
        self.mode, self.sleep_s, self.calls = mode, sleep_s, 0

    def judge(self, prompts, max_tokens, temperature):
        self.calls += 1
        time.sleep(self.sleep_s)
        if self.mode == "raise":
            raise RuntimeError("judge engine died")
        if self.mode == "short":
            return ["SCORE: 5"] * (len(prompts) - 1)
        if self.mode == "junk":
            return ["The assistant was helpful."] * len(prompts)
        return [f"{'STEP TO GRADE' in p} {max_tokens} {temperature}\nSCORE: {9 if '= 391.' in p else 2}"
                for p in prompts]

    def count(self):
        return self.calls


@pytest.fixture
def judges(ray_cluster):
    started = []

    def start(mode="answer", sleep_s=0.0):
        actor = ray_cluster.remote(Judge).options(num_cpus=0).remote(mode, sleep_s)
        started.append(actor)
        return actor

    yield start
    for actor in started:
        ray_cluster.kill(actor)


def test_judge_values_enter_the_total_and_the_breakdown(judges):
    cfg = from_dict(RewardConfig, ON)
    actor = RewardActor(cfg, judge=judges())
    scored = actor.score_batch(batch(), TASKS)
    assert [t.reward_breakdown["judge"] for t in scored] == pytest.approx([0.9, 0.2, 0.2])
    plain = RewardActor().score_batch(batch(), TASKS)
    for s, p in zip(scored, plain, strict=True):
        assert s.reward == pytest.approx(p.reward + 0.3 * s.reward_breakdown["judge"])
        assert "judge_fallback" not in s.reward_breakdown and s.reward_breakdown["total"] == s.reward
    stats = actor.stats(scored)
    assert {k: stats[k] for k in COUNTERS} == {"judge_prompts": 3, "judge_fallbacks": 0, "judge_timeout": 0,
                                               "judge_error": 0, "judge_unparseable": 0, "judge_unset": 0}
    assert stats["judge/mean"] == pytest.approx(13 / 30)


def test_a_judge_that_sleeps_past_the_timeout_falls_back_and_is_counted(judges):
    cfg = from_dict(RewardConfig, {**ON, "judge_timeout_s": 1.0, "judge_retries": 3})
    slow = judges(sleep_s=60.0)
    actor = RewardActor(cfg)
    actor.set_judge(slow)
    started = time.monotonic()
    scored = actor.score_batch(batch(), TASKS)
    assert time.monotonic() - started < 10  # the budget holds: no retry after a timeout
    assert [t.reward_breakdown["judge"] for t in scored] == [0.0, 0.0, 0.0]
    assert [t.reward_breakdown["judge_fallback"] for t in scored] == [1.0, 1.0, 1.0]
    assert actor.judge_counts["judge_timeout"] == actor.judge_counts["judge_fallbacks"] == 3
    plain = RewardActor().score_batch(batch(), TASKS)
    assert [t.reward for t in scored] == pytest.approx([t.reward for t in plain])  # fallback 0 adds nothing
    stats = actor.stats(scored)
    assert stats["judge_fallback/mean"] == 1.0 and stats["judge_timeout"] == 3


def test_a_judge_that_raises_is_retried_then_falls_back(ray_cluster, judges):
    broken = judges(mode="raise")
    actor = RewardActor(from_dict(RewardConfig, {**ON, "judge_retries": 2}), judge=broken)
    scored = actor.score_batch(batch(), TASKS)
    assert all(t.reward_breakdown["judge_fallback"] == 1.0 and t.reward_breakdown["judge"] == 0.0 for t in scored)
    assert actor.judge_counts["judge_error"] == 3 and ray_cluster.get(broken.count.remote()) == 3  # 1 + 2 retries
    short = RewardActor(from_dict(RewardConfig, {**ON, "judge_retries": 0}), judge=judges(mode="short"))
    short.score_batch(batch(), TASKS)
    assert short.judge_counts["judge_error"] == 3  # a reply missing means none can be matched to its prompt


def test_unparseable_replies_and_a_missing_judge_fall_back_per_episode(judges):
    actor = RewardActor(from_dict(RewardConfig, ON), judge=judges(mode="junk"))
    scored = actor.score_batch(batch(), TASKS)
    assert [t.reward_breakdown["judge_fallback"] for t in scored] == [1.0, 1.0, 1.0]
    assert actor.judge_counts["judge_unparseable"] == 3
    alone = RewardActor(from_dict(RewardConfig, ON))  # e.g. jobs.eval: no judge started
    alone.score_batch(batch(), TASKS)
    alone.score_batch(batch()[:1], TASKS)
    assert alone.judge_counts == {**dict.fromkeys(COUNTERS, 0), "judge_prompts": 4, "judge_fallbacks": 4,
                                  "judge_unset": 4}


def test_the_judge_scores_turns_as_process_rewards(judges):
    cfg = from_dict(RewardConfig, {"judge": "rollout", "process_weights": {"judge": 1.0, "tool_call_validity": 0.0}})
    actor = RewardActor(cfg, judge=judges())
    scored = actor.score_batch(batch(), TASKS)
    assert actor.judge_counts["judge_prompts"] == sum(len(t.turns) for t in batch()) == 4  # the last has no turn
    assert [[turn.reward for turn in t.turns] for t in scored] == [[0.2, 0.9], [0.2, 0.2], []]
    assert "judge" not in scored[0].reward_breakdown  # the episode judge is off: weights.judge unset
    assert scored[0].reward_breakdown["process_judge"] == pytest.approx(0.55)
    both = RewardActor(from_dict(RewardConfig, {**ON, "process_weights": {"judge": 1.0}}), judge=judges(mode="junk"))
    (one,) = both.score_batch(batch()[:1], TASKS)
    assert one.reward_breakdown["judge_fallback"] == one.reward_breakdown["process_judge_fallback"] == 1.0
    assert both.judge_counts["judge_prompts"] == 3  # episode and turns in one call


def test_a_judge_weighted_zero_is_not_asked(ray_cluster, judges):
    handle = judges()
    actor = RewardActor(RewardConfig(weights={"judge": 0.0}), judge=handle)
    (scored,) = actor.score_batch(batch()[:1], TASKS)
    assert "judge" not in scored.reward_breakdown and ray_cluster.get(handle.count.remote()) == 0
    assert "judge_prompts" not in actor.stats([scored])


def test_reward_actor_started_remote_with_a_judge(ray_cluster, judges):
    from actors.remote import judge_for, start_reward_actor

    cfg = from_dict(RewardConfig, ON)
    handle = judges()
    assert judge_for(cfg, None, [handle]) is handle and judge_for(RewardConfig(), None, [handle]) is None
    remote = start_reward_actor(cfg, judge=handle)
    scored = ray_cluster.get(remote.score_batch.remote(batch(), TASKS))
    assert [t.reward_breakdown["judge"] for t in scored] == pytest.approx([0.9, 0.2, 0.2])
    ray_cluster.kill(remote)


# ---- config ----


def test_default_is_off_and_documented():
    from jobs.config_loader import undocumented

    cfg = RewardConfig()
    assert cfg.judge == "none" and "judge" not in cfg.weights and cfg.validate() == []
    assert undocumented(RewardConfig) == []
    assert cfg.judge_timeout_s < cfg.score_timeout_s


@pytest.mark.parametrize(("values", "needle"), [
    ({"weights": {"judge": 0.3}}, "judge is none, so every episode would fall back"),
    ({"process_weights": {"judge": 1.0}}, "judge is none"),
    ({"judge": "rollout"}, "the judge is never asked"),
    ({"judge": "gpt", "weights": {"judge": 0.3}}, "judge: 'gpt' unknown"),
    ({"judge": "actor", "weights": {"judge": 0.3}}, "judge: actor needs judge_model"),
    ({**ON, "judge_timeout_s": 0}, "judge_timeout_s: must be a finite number of seconds > 0"),
    ({**ON, "judge_timeout_s": 400}, "is not below score_timeout_s 300"),
    ({**ON, "judge_max_tokens": 2}, "judge_max_tokens: must be an integer >= 8"),
    ({**ON, "judge_retries": -1}, "judge_retries: must be an integer >= 0"),
    ({**ON, "judge_rubric": "Rate this episode 0-10."}, "judge_rubric: must hold the placeholder {conversation}"),
    ({**ON, "weights": {"judge": 0.5}}, "shaping could outweigh a right answer"),  # 0.6 + 0.5 >= 1.0
    ({**ON, "weights": {"judge": -0.3}}, "weights.judge: must be >= 0"),
])
def test_judge_config_problems_name_the_fix(values, needle):
    with pytest.raises(ConfigError) as info:
        from_dict(RewardConfig, values)
    assert needle in str(info.value) and "Fix:" in str(info.value)


def test_judge_configs_that_pass():
    assert from_dict(RewardConfig, ON).validate() == []
    assert from_dict(RewardConfig, {"judge": "actor", "judge_model": "smollm2-135m", "weights": {"judge": 0.3},
                                    "process_weights": {"judge": 0.5}}).validate() == []
    assert RewardConfig(judge="rollout", weights={"judge": 0.3}, judge_rubric=RUBRIC).validate() == []


def test_run_config_rejects_a_rollout_judge_on_merged_serving():
    from jobs.config import RunConfig

    for serving in ("merged", "auto"):  # auto merges on a CPU engine (num_gpus_per_worker 0)
        with pytest.raises(ConfigError, match="rollout.adapter_serving=lora"):
            from_dict(RunConfig, {"reward": ON, "rollout": {"adapter_serving": serving}})
    assert from_dict(RunConfig, {"reward": ON, "rollout": {"adapter_serving": "lora"}}).validate() == []
    gpu = {"adapter_serving": "auto", "num_gpus_per_worker": 1.0}  # auto is LoRA serving on GPUs
    assert from_dict(RunConfig, {"reward": ON, "rollout": gpu}).validate() == []
    actor = {"judge": "actor", "judge_model": "smollm2-135m", "weights": {"judge": 0.3}}
    assert from_dict(RunConfig, {"reward": actor, "rollout": {"adapter_serving": "merged"}}).validate() == []


def test_merged_serving_refuses_to_judge_and_names_the_fix():
    from actors.vllm_engine import VLLMBackend

    backend = VLLMBackend.__new__(VLLMBackend)  # the guard runs before the engine is touched
    backend.merged = True
    with pytest.raises(RuntimeError, match="Fix: set rollout.adapter_serving=lora, or reward.judge=actor"):
        backend.generate_chat([[{"role": "user", "content": "hi"}]], max_tokens=8)


# ---- the rollout engine's base model as the judge (real vLLM) ----

MAX_TOKENS = 32  # engine work kept tiny: 2 prompts x 32 tokens


@pytest.mark.integration
@pytest.mark.timeout(300, func_only=True)  # the session engine's start is the fixture's, not this test's
def test_the_rollout_engine_judges_with_its_base_model(ray_cluster, rollout_worker, model_path, tmp_path):
    """The judge request carries no LoRA: with an adapter served, the worker still serves it afterwards, and the
    replies are exactly the base model's greedy continuations (transformers, fp32), not the adapter's."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.actors.adapters import random_adapter

    get = ray_cluster.get
    cfg = from_dict(RewardConfig, {**ON, "judge_max_tokens": MAX_TOKENS, "judge_max_chars": 1000})
    episodes = batch()[:2]  # the right and the wrong final answer
    prompts = [episode_prompt(t, max_chars=cfg.judge_max_chars) for t in episodes]
    files = random_adapter(model_path, rank=8, seed=7)
    get(rollout_worker.load_adapter.remote(401, files))
    try:
        before = get(rollout_worker.serving.remote())
        started = time.perf_counter()
        replies = get(rollout_worker.judge.remote(prompts, MAX_TOKENS, 0.0))
        direct_s = time.perf_counter() - started
        actor = RewardActor(cfg, judge=rollout_worker)
        scored = actor.score_batch(episodes, TASKS)
        after = get(rollout_worker.serving.remote())
    finally:
        get(rollout_worker.use_version.remote(0))  # the worker is shared by the whole session
    assert before["version"] == after["version"] == 401 and before["checksum"] == after["checksum"]
    print(f"judge: {len(prompts)} episodes in {direct_s:.1f} s; replies: {replies}")
    for t, reply in zip(scored, replies, strict=True):  # greedy: the reward actor got the same replies
        value = judge_value(reply)
        assert t.reward_breakdown["judge"] == (0.0 if value is None else value)
        assert ("judge_fallback" in t.reward_breakdown) == (value is None)
    counts = actor.judge_counts
    assert counts["judge_prompts"] == 2 and counts["judge_timeout"] == counts["judge_error"] == 0
    assert counts["judge_fallbacks"] == counts["judge_unparseable"]

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()

    def greedy(model, prompt: str) -> str:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                             tokenize=False)
        ids = torch.tensor([tokenizer.encode(text, add_special_tokens=False)])
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=MAX_TOKENS, do_sample=False,
                                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id)
        return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)

    assert replies == [greedy(base, p) for p in prompts]
    for name, data in files.items():  # the check has teeth: the served adapter would have answered otherwise
        (tmp_path / name).write_bytes(data)
    adapted = PeftModel.from_pretrained(base, str(tmp_path)).eval()
    assert [greedy(adapted, p) for p in prompts] != replies
