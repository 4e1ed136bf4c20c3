"""Demonstrations -> ids + loss mask (the rollout's token contract), expert demos, OpenAI import, the SFT job."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from envs.calculator import generate_tasks, verify
from envs.chat import END_OF_TURN, TOOL_CALL_CLOSE, decode, render
from envs.tool_calls import parse_tool_calls
from learners.sft_data import DemoFormatError, example_from_messages, expert_demos, read_openai_demos

pytestmark = pytest.mark.timeout(120)


def spans(tokenizer, ex) -> list[str]:
    """The decoded runs of consecutive mask-1 tokens."""
    out, run = [], []
    for token, m in zip(ex.input_ids + [None], ex.loss_mask + [0]):
        if m:
            run.append(token)
        elif run:
            out.append(decode(tokenizer, run))
            run = []
    return out


def recovering(demos):
    return [d for d in demos if any(m.get("weight") == 0 for m in d)]


# ---- messages -> ids + mask ----


def test_mask_is_exactly_the_assistant_turns(tokenizer):
    demo = expert_demos("calculator", 1, 0, recovery_fraction=0.0)[0]
    call, result, answer = demo[2:]
    assert call["content"].endswith(TOOL_CALL_CLOSE) and result["role"] == "tool"
    ex = example_from_messages(tokenizer, demo)

    assert decode(tokenizer, ex.input_ids) == render(demo)
    assert len(ex.input_ids) == len(ex.loss_mask) and set(ex.loss_mask) <= {0, 1}
    # The call ends at the stop string (the runner closes that turn); the final answer ends with <|im_end|>.
    assert spans(tokenizer, ex) == [call["content"], answer["content"] + END_OF_TURN]
    prompt = tokenizer.encode(render(demo[:2], add_generation_prompt=True), add_special_tokens=False)
    assert ex.input_ids[: len(prompt)] == prompt and not any(ex.loss_mask[: len(prompt)])
    masked_out = decode(tokenizer, [t for t, m in zip(ex.input_ids, ex.loss_mask) if not m])
    assert f"<tool_response>\n{result['content']}\n</tool_response>" in masked_out
    # The final <|im_end|> is trained (the model ends its answer); the newline after it is the runner's.
    assert decode(tokenizer, ex.input_ids[-2:]) == f"{END_OF_TURN}\n" and ex.loss_mask[-2:] == [1, 0]


def test_weight_zero_turn_stays_in_context_but_out_of_the_loss(tokenizer):
    demo = recovering(expert_demos("calculator", 60, 0))[0]
    ex = example_from_messages(tokenizer, demo)
    assistant = [m for m in demo if m["role"] == "assistant"]
    assert assistant[0]["weight"] == 0
    assert decode(tokenizer, ex.input_ids) == render(demo)
    assert assistant[0]["content"] in decode(tokenizer, ex.input_ids)
    assert spans(tokenizer, ex) == [assistant[1]["content"], assistant[2]["content"] + END_OF_TURN]


def test_a_turn_not_ended_by_the_stop_string_trains_its_end_token(tokenizer):
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    ex = example_from_messages(tokenizer, messages)
    assert spans(tokenizer, ex) == ["Hello!" + END_OF_TURN, "4" + END_OF_TURN]
    assert decode(tokenizer, ex.input_ids) == render(messages)


class _LossyTokenizer:
    """Delegates to the real tokenizer but drops a character of assistant text: the contract check must catch it."""

    def __init__(self, tokenizer):
        self._tok = tokenizer

    def __getattr__(self, name):
        return getattr(self._tok, name)

    def encode(self, text, **kw):
        return self._tok.encode(text.replace("Hello!", "Hello"), **kw)


def test_broken_token_contract_is_an_error(tokenizer):
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"}]
    with pytest.raises(ValueError, match="chat contract"):
        example_from_messages(_LossyTokenizer(tokenizer), messages)
    with pytest.raises(ValueError, match="no assistant message"):
        example_from_messages(tokenizer, messages[:1])


# ---- scripted expert ----


def test_expert_demos_are_deterministic_and_correct():
    demos = expert_demos("calculator", 60, 3)
    assert demos == expert_demos("calculator", 60, 3)
    assert demos != expert_demos("calculator", 60, 4)
    tasks = generate_tasks(60, 3, "train")
    for task, demo in zip(tasks, demos, strict=True):
        assert demo[1] == {"role": "user", "content": task.prompt}
        assert demo[0]["tools"][0]["function"]["name"] == "calculator"
        assert demo[-1]["role"] == "assistant" and verify(task, demo[-1]["content"])
        calls, errors = parse_tool_calls(demo[-3]["content"])  # the trained call is strict and exact
        assert not errors and calls[0].strict and calls[0].name == "calculator"


def test_recoveries_show_a_real_error_then_the_fix():
    demos = expert_demos("calculator", 200, 0)
    bad = recovering(demos)
    assert 0.07 * len(demos) <= len(bad) <= 0.25 * len(demos)
    kinds = set()
    for demo in bad:
        mistake, observation, fixed = demo[2], demo[3], demo[4]
        assert mistake["role"] == "assistant" and mistake["weight"] == 0 and fixed["role"] == "assistant"
        assert observation["role"] == "tool" and observation["content"].startswith("error: ")
        calls, errors = parse_tool_calls(mistake["content"])
        kinds.add("parse" if errors else calls[0].name)
        fixed_calls, fixed_errors = parse_tool_calls(fixed["content"])
        assert not fixed_errors and fixed_calls[0].strict and fixed_calls[0].name == "calculator"
    assert "parse" in kinds and len(kinds) == 3  # malformed JSON, a wrong argument name, a wrong tool name
    assert not recovering(expert_demos("calculator", 50, 0, recovery_fraction=0.0))
    with pytest.raises(ValueError, match="no scripted expert"):
        expert_demos("chess", 1, 0)


# ---- OpenAI-format import ----


def to_openai(demo: list[dict]) -> dict:
    """An expert demo as the OpenAI chat format writes it (tool_calls with JSON-string arguments)."""
    messages, tools = [], None
    for m in demo:
        if m["role"] == "system":
            tools = m["tools"]
            messages.append({"role": "system", "content": m["content"]})
        elif m["role"] == "assistant" and m["content"].startswith("<tool_call>"):
            call = json.loads(m["content"].split("\n")[1])
            messages.append({"role": "assistant", "content": None, "tool_calls": [{
                "id": "call_0", "type": "function",
                "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])}}]})
        elif m["role"] == "tool":
            messages.append({"role": "tool", "tool_call_id": "call_0", "content": m["content"]})
        else:
            messages.append({"role": m["role"], "content": m["content"]})
    return {"messages": messages, "tools": tools}


def test_openai_jsonl_round_trip(tmp_path, tokenizer):
    demos = expert_demos("calculator", 3, 0, recovery_fraction=0.0)
    path = tmp_path / "demos.jsonl"
    path.write_text("\n".join(json.dumps(to_openai(d)) for d in demos) + "\n\n")
    read = read_openai_demos(path)
    strip = [[{k: v for k, v in m.items() if k != "name"} for m in d] for d in demos]
    assert read == strip
    for d in read:
        assert decode(tokenizer, example_from_messages(tokenizer, d).input_ids) == render(d)


def test_openai_parquet_nested_and_json_string_columns(tmp_path):
    demos = expert_demos("calculator", 2, 1, recovery_fraction=0.0)
    rows = [to_openai(d) for d in demos]
    pq.write_table(pa.Table.from_pylist([{"messages": r["messages"]} for r in rows]), tmp_path / "nested.parquet")
    pq.write_table(pa.table({"messages": [json.dumps(r["messages"]) for r in rows],
                             "tools": [json.dumps(r["tools"]) for r in rows]}), tmp_path / "strings.parquet")
    nested, strings = read_openai_demos(tmp_path / "nested.parquet"), read_openai_demos(tmp_path / "strings.parquet")
    assert [m["content"] for m in nested[0]] == [m["content"] for m in demos[0]]
    assert "tools" not in nested[0][0] and strings[0][0]["tools"] == demos[0][0]["tools"]
    assert strings[1][2]["content"] == demos[1][2]["content"]


def test_bad_rows_are_named(tmp_path):
    good = to_openai(expert_demos("calculator", 1, 0, recovery_fraction=0.0)[0])
    bad_args = json.loads(json.dumps(good))
    bad_args["messages"][2]["tool_calls"][0]["function"]["arguments"] = "{expression: 1+1"
    lines = [json.dumps(good), json.dumps(bad_args), "{not json", json.dumps({"messages": [{"role": "robot"}]})]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines))
    with pytest.raises(DemoFormatError) as info:
        read_openai_demos(path)
    text = str(info.value)
    assert "row 0" not in text
    assert "row 1 message 2 tool_calls[0]: function.arguments is not valid JSON" in text
    assert "row 2 (line 3): not valid JSON" in text
    assert "row 3 message 0: role must be" in text and len(info.value.problems) == 3
    with pytest.raises(FileNotFoundError):
        read_openai_demos(tmp_path / "missing.jsonl")


# ---- through training and the job (tiny demos, a few seconds) ----


def tiny_demos(path, n=4):
    rows = [{"messages": [{"role": "user", "content": f"{i}+{i}?"},
                          {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {
                              "name": "calculator", "arguments": json.dumps({"expression": f"{i}+{i}"})}}]},
                          {"role": "tool", "content": str(2 * i)},
                          {"role": "assistant", "content": f"{2 * i}."}]} for i in range(n)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def test_train_sft_saves_a_peft_adapter(tmp_path, model_path):
    from learners.sft import SFTConfig, train_sft

    cfg = SFTConfig(demos_path=str(tiny_demos(tmp_path / "d.jsonl")), batch_size=2, epochs=2, warmup_steps=0,
                    lr=5e-3, schedule="constant", check_tasks=0)
    metrics = train_sft(cfg, model_path, tmp_path / "adapter", log=lambda _: None)
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    assert len(metrics["steps"]) == 4 and metrics["num_examples"] == 4
    assert metrics["final_loss"] < metrics["first_loss"]
    assert metrics["loss_tokens"] < metrics["tokens"]


def test_sft_job_bad_config_exits_2(tmp_path, capsys):
    from jobs.config_loader import undocumented
    from jobs.sft import main
    from learners.sft import SFTConfig

    assert not undocumented(SFTConfig)

    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: -1\nepochs: 0\nlora:\n  rank: 0\n")
    assert main(["--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "lr: must be > 0" in err and "epochs: must be >= 1" in err and "lora.rank: must be >= 1" in err


def test_sft_job_runs_writes_its_outputs_and_fills_the_warm_start_cache(tmp_path, capsys, monkeypatch):
    """``jobs.sft --config R`` then a train job with ``init_adapter: sft:R``: the train job loads the adapter the
    SFT job trained instead of training the same one again (it did, for 15 min on support_desk)."""
    import learners.sft
    from jobs.sft import main
    from jobs.warm_start import sft_recipe_adapter

    monkeypatch.setenv("AGENTRL_CACHE", str(tmp_path / "cache"))
    demos = tiny_demos(tmp_path / "d.jsonl", n=2)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"demos_path: {demos}\nstorage: {tmp_path / 'runs'}\ncheck_tasks: 0\nbatch_size: 2\n")
    assert main(["--config", str(recipe)]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert (run_dir / "adapter" / "adapter_model.safetensors").exists()
    assert json.loads((run_dir / "metrics.json").read_text())["num_examples"] == 2
    assert "demos_path" in (run_dir / "config.yaml").read_text()
    out = capsys.readouterr().out
    assert "adapter" in out and "warm start cache: " + str(tmp_path / "cache") in out

    monkeypatch.setattr(learners.sft, "train_sft", lambda *a, **k: pytest.fail("the cached adapter was trained again"))
    cached = sft_recipe_adapter(recipe, "smollm2-135m")
    assert (cached / "adapter_model.safetensors").read_bytes() == \
        (run_dir / "adapter" / "adapter_model.safetensors").read_bytes()
    assert json.loads((cached / "sft_metrics.json").read_text())["num_examples"] == 2


def test_extra_demos_add_that_many_of_a_kind_after_the_same_mixed_demos():
    from envs.support_tasks import generate_tasks

    base = expert_demos("support_desk", 12, 0, recovery_fraction=0.0)
    more = expert_demos("support_desk", 12, 0, recovery_fraction=0.0, extra={"by_name": 5, "handoff": 2})
    assert more[:12] == base and len(more) == 19
    users = [next(m["content"] for m in d if m["role"] == "user") for d in more]
    assert len(set(users)) == len(users)  # no demo repeats
    by_prompt = {t.prompt: t.meta_value()["kind"] for t in generate_tasks(400, 0, "train")}
    assert sorted(by_prompt[u] for u in users[12:]) == ["by_name"] * 5 + ["handoff"] * 2


def test_extra_demos_of_an_unknown_kind_name_the_kinds_there_are():
    with pytest.raises(ValueError, match=r"too few of kind\(s\) \{'refund': 0\}.*Fix: use kinds.*by_name"):
        expert_demos("support_desk", 2, 0, extra={"refund": 1})


def test_sft_config_checks_extra_demos(tmp_path):
    from learners.sft import SFTConfig

    assert any("extra_demos.by_name: must be an integer >= 0" in p
               for p in SFTConfig(env="support_desk", extra_demos={"by_name": -1}).validate())
    demos = tmp_path / "demos.jsonl"
    demos.write_text("{}\n")
    assert any("extra_demos: needs the scripted expert" in p
               for p in SFTConfig(demos_path=str(demos), extra_demos={"by_name": 4}).validate())
