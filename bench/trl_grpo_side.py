"""P4, the TRL side: TRL's `GRPOTrainer` on the default job's calculator tasks, with our calculator as its tool.

Run by bench/vs_trl.py (which writes the spec: model, tasks in our run's order, every matched setting); alone:

    python3.11 -m venv /work/trl-venv                       # outside the repo: never touch .venv (pinned stack)
    /work/trl-venv/bin/pip install torch==2.13.0            # first and alone: takes the local CPU wheel
    /work/trl-venv/bin/pip install trl==1.16.0 peft datasets  # brings transformers, accelerate, pyarrow, jinja2, yaml
    PYTHONPATH=. /work/trl-venv/bin/python bench/trl_grpo_side.py --spec <spec.json> --out <result.json>

It imports our `envs`, `rewards` and `actors.trajectory` (PYTHONPATH=repo root; they need only pyarrow, jinja2 and
pyyaml, which the TRL install brings), so both sides use one calculator, one chat template and one reward.

What it runs: TRL 1.16's multi-turn tool loop (`GRPOTrainer(tools=[calculator])`: generate, parse the call, run
the tool, append its result, generate again, up to `max_tool_calling_iterations`), generation with HF transformers
`generate` on CPU (`use_vllm=False`: TRL's vLLM modes need CUDA), fp32, PEFT LoRA on the merged SFT model, the
reference policy = the adapter switched off, the DAPO token-mean loss with k3 KL (`beta`) in it, group-normalised
advantages, one optimizer step per batch of `tasks_per_step` x `samples_per_task` completions. Matched to our job:

- prompt: our system prompt and tool schema rendered by our chat template, token for token (asserted below): the
  tokenizer gets our template, which also renders `tool_calls` (TRL checks a template can) and substitutes our exact
  tool schema JSON for the one transformers derives from the Python tool's docstring;
- tool-call parsing: TRL's (the Qwen/Hermes `<tool_call>{json}</tool_call>` response template), tool results:
  our `envs.base.call_tool` on our calculator (the same `error: ...` observations);
- turns: 1 + `max_tool_calling_iterations` = our `max_turns`; per turn at most `max_tokens_per_turn` new tokens
  (`generation_kwargs.max_new_tokens`), the whole completion at most `max_total_tokens` - the longest prompt;
- a turn ends at the call: our runner stops at `</tool_call` (a vLLM stop string). TRL's HF path has no stop
  string of its own: `generation_kwargs.stop_strings` needs the tokenizer in `generate()`, which TRL does not
  pass, so with spec `stop` set this file hands it over (a wrapper on the policy's `generate`) and closes a turn
  the stop string ended on the batch's last step with `<|im_end|>`, as HF's padding (pad = EOS here) closes the
  others. Without it (spec `stop: []`, side `trl-nostop`) the SFT model at temperature 1 often writes on after
  `</tool_call>` (a made-up tool response, another call), TRL's parser then fails and takes the turn as the final
  answer: longer, worse episodes than ours from the same policy;
- reward: our `rewards.scorers.combine` with the run's `RewardConfig` on a `Trajectory` rebuilt from the decoded
  completion with our runner's rules (our parser grades each call's strictness; a last turn that is cut off or
  still holds a `<tool_call>` is no final answer);
- optimizer: AdamW(lr, eps, weight decay), grad-norm clip, our warm-up `min(1, (step + 1) / warmup_steps)`,
  micro-batches of `micro_batch_size` (gradient accumulation over the batch), torch threads `threads`.

Writes `<out>.episodes.jsonl` (every completion as decoded, its reward and status) and, per optimizer step: wall
seconds (between `on_step_end` callbacks; step 1 from `on_train_begin`), seconds
in TRL's generate + tool loop, in scoring, the mean reward, outcome success, sampled tokens (TRL's
`completions/mean_length` counts the tool-masked-in tokens only) and TRL's own logged metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

HEADER = "<|im_start|>"
END = "<|im_end|>"
_SEGMENT = re.compile(r"<\|im_start\|>(assistant|tool)\n(.*?)(<\|im_end\|>|(?=<\|im_start\|>)|$)", re.DOTALL)
_TOOL_CALL_RENDER = (
    "{%- if message.get('tool_calls') %}{%- for call in message['tool_calls'] %}"
    "{{- '<tool_call>\\n' + ({'name': call['function']['name'], 'arguments': call['function']['arguments']} | tojson)"
    " + '\\n</tool_call>' }}{%- endfor %}{%- endif %}"
)


def chat_template(schemas: dict[str, dict]) -> str:
    """Our template (envs/chat_template.jinja) for TRL's tokenizer: the tool list rendered from our exact schemas
    (transformers turns a Python tool into its own schema), and assistant ``tool_calls`` rendered the way our
    runner writes calls (TRL renders them in its template checks and in the tool-suffix probe; our episodes keep
    calls in the content)."""
    from envs.chat import CHAT_TEMPLATE

    table = "{%- set our_schemas = {" + ", ".join(
        f"{json.dumps(name)}: {json.dumps(json.dumps(schema, ensure_ascii=False))}" for name, schema in schemas.items()
    ) + "} %}\n"
    tool_json = "(tool | tojson)"
    lookup = ("(our_schemas[tool['function']['name']] if tool.get('function') and tool['function'].get('name') in "
              "our_schemas else (tool | tojson))")
    content = "(message['content'] or '') + '<|im_end|>\\n' }}"
    assert CHAT_TEMPLATE.count(tool_json) == 1 and CHAT_TEMPLATE.count(content) == 1, "our template changed"
    with_calls = "(message['content'] or '') }}" + _TOOL_CALL_RENDER + "{{- '<|im_end|>\\n' }}"
    return table + CHAT_TEMPLATE.replace(tool_json, lookup).replace(content, with_calls)


def make_tool():
    """The calculator as TRL wants a tool (a typed function with a docstring), dispatching through our
    ``call_tool`` so validation, coercion and error texts are our env's."""
    from envs.base import call_tool
    from envs.calculator import CALCULATOR_TOOL
    from envs.tool_calls import ToolCall

    tools = {CALCULATOR_TOOL.name: CALCULATOR_TOOL}

    def calculator(expression: str) -> str:
        """Evaluate an arithmetic expression exactly.

        Args:
            expression: the arithmetic to evaluate, e.g. 17 * 23
        """
        call = ToolCall(CALCULATOR_TOOL.name, {"expression": expression}, raw="", strict=True)
        return call_tool(tools, call).observation

    return calculator


def rebuild(text: str, task):
    """Our ``Trajectory`` of one TRL completion (decoded with special tokens), by our runner's rules, for scoring.

    Per assistant turn our parser reads the calls (strictness, parse errors; ``actors.episode`` records an
    unreadable call as a failed record with an ``error: ...`` result). The results are the ones TRL's tool loop
    produced. A last turn whose calls TRL did not run (its tool-iteration or length limit) gets them run here, as
    our runner runs the calls of its last allowed turn before it marks the episode truncated; only a closed turn
    with no call is a final answer (status ``finished``).
    """
    from actors.trajectory import ToolCallRecord, Trajectory, Turn
    from envs.base import call_tool, check_arguments
    from envs.calculator import CALCULATOR_TOOL
    from envs.tool_calls import parse_tool_calls

    segments = [(m.group(1), m.group(2), m.group(3) == END) for m in _SEGMENT.finditer(HEADER + "assistant\n" + text)]
    messages, records, turns, parse_errors = [], [], [], 0
    status, final_answer = "truncated", None
    i = 0
    while i < len(segments):
        role, content, closed = segments[i]
        i += 1
        if role != "assistant":
            continue
        turn = len(turns)
        turns.append(Turn(turn, turn + 1))
        messages.append({"role": "assistant", "content": content})
        calls, errors = parse_tool_calls(content)
        parse_errors += len(errors)
        results = []
        while i < len(segments) and segments[i][0] == "tool":
            results.append(segments[i][1].removeprefix("<tool_response>\n").removesuffix("\n</tool_response>"))
            i += 1
        if not results and not calls and not errors:
            if i >= len(segments) and closed:
                status, final_answer = "finished", content
            continue
        if not results:  # calls TRL did not run: the last turn, at its iteration or length limit
            results = [call_tool({CALCULATOR_TOOL.name: CALCULATOR_TOOL}, call).observation for call in calls]
        for err in errors:
            records.append(ToolCallRecord(turn, "", err.raw[:2000], ok=False, error=err.message, strict=False))
            messages.append({"role": "tool", "content": f"error: {err.message}"})
        for k, result in enumerate(results):  # paired in order with the calls our parser read
            call = calls[k] if k < len(calls) else None
            coerced = call is not None and check_arguments(CALCULATOR_TOOL.parameters, call.arguments)[2]
            ok = not result.startswith(("error:", "{'error'"))
            records.append(ToolCallRecord(turn, call.name if call else CALCULATOR_TOOL.name,
                                          json.dumps(call.arguments if call else {}), ok=ok,
                                          error=None if ok else result,
                                          strict=bool(call and call.strict) and not coerced))
            messages.append({"role": "tool", "content": result})
    return Trajectory(task_id=task.task_id, env=task.env, group_id=task.task_id, sample_index=0, prompt_ids=[],
                      completion_ids=[], loss_mask=[], behavior_logprobs=[], messages=messages, turns=turns,
                      tool_calls=records, final_answer=final_answer, status=status, parse_errors=parse_errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", required=True, help="JSON written by bench/vs_trl.py")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    spec = json.loads(Path(args.spec).read_text())
    threads = int(spec["threads"])
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    started = time.perf_counter()

    import peft
    import torch
    import transformers
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer
    from trl.chat_template_utils import qwen3_template

    from envs.calculator import CALCULATOR_TOOL, SYSTEM_PROMPT
    from envs.chat import render
    from envs.tasks import Task
    from jobs.config_loader import from_dict
    from rewards.config import RewardConfig
    from rewards.scorers import combine

    torch.set_num_threads(threads)
    tasks = [Task(**t) for t in spec["tasks"]]
    by_id = {t.task_id: t for t in tasks}
    reward_cfg = from_dict(RewardConfig, spec["reward"])
    tool = make_tool()

    tokenizer = AutoTokenizer.from_pretrained(spec["model_path"], padding_side="left")
    tokenizer.chat_template = chat_template({CALCULATOR_TOOL.name: CALCULATOR_TOOL.schema()})
    tokenizer.response_template = qwen3_template  # Hermes <tool_call>{json}</tool_call> + <|im_end|>: our format

    def messages(task: Task) -> list[dict]:
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": task.prompt}]

    prompt_lengths = []
    for task in tasks:  # the prompt TRL tokenizes == the prompt our runner tokenizes, id for id
        ours_text = render([messages(task)[0] | {"tools": [CALCULATOR_TOOL.schema()]}, messages(task)[1]],
                           add_generation_prompt=True)
        trl_text = tokenizer.apply_chat_template(messages(task), tools=[tool], add_generation_prompt=True,
                                                 tokenize=False)
        assert trl_text == ours_text, f"prompt rendering differs for {task.task_id}:\n{trl_text!r}\n{ours_text!r}"
        trl_ids = tokenizer.apply_chat_template(messages(task), tools=[tool], add_generation_prompt=True,
                                                tokenize=True, return_dict=True)["input_ids"]
        assert list(trl_ids) == tokenizer.encode(ours_text, add_special_tokens=False), task.task_id
        prompt_lengths.append(len(trl_ids))
    max_completion = int(spec["max_total_tokens"]) - max(prompt_lengths)

    dataset = Dataset.from_list([{"prompt": messages(t), "task_id": t.task_id} for t in tasks])
    per_step: dict[int, dict] = {}
    episodes = open(Path(args.out).with_suffix(".episodes.jsonl"), "w")  # every completion, as TRL sampled it

    def reward(prompts, completions, completion_ids, task_id, trainer_state, **_):
        step = trainer_state.global_step + 1
        started_scoring = time.perf_counter()
        totals, outcomes, statuses, calls = [], [], {}, 0
        for ids, tid in zip(completion_ids, task_id, strict=True):
            text = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
            traj = rebuild(text, by_id[tid])
            total, breakdown = combine(traj, by_id[tid], reward_cfg)
            episodes.write(json.dumps({"step": step, "task_id": tid, "reward": total, "status": traj.status,
                                       "breakdown": breakdown, "completion": text}) + "\n")
            totals.append(total)
            outcomes.append(breakdown.get("outcome", 0.0))
            statuses[traj.status] = statuses.get(traj.status, 0) + 1
            calls += len(traj.tool_calls)
        row = per_step.setdefault(step, {})
        for key, empty in (("rewards", []), ("outcomes", []), ("statuses", {}), ("tool_calls", 0), ("score_s", 0.0),
                           ("task_ids", [])):
            row.setdefault(key, empty)
        row["task_ids"] += list(task_id)
        row["rewards"] += totals
        row["outcomes"] += outcomes
        row["tool_calls"] += calls
        for k, v in statuses.items():
            row["statuses"][k] = row["statuses"].get(k, 0) + v
        row["score_s"] += time.perf_counter() - started_scoring
        return totals

    reward.__name__ = "agentrl_reward"

    class Timed(GRPOTrainer):
        """GRPOTrainer with our LR warm-up and the generate + tool loop timed per step."""

        def create_scheduler(self, num_training_steps, optimizer=None):
            warmup = max(1, int(spec["warmup_steps"]))  # learners/learner.py: lr * min(1, (step + 1) / warmup)
            if self.lr_scheduler is None:
                self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                    optimizer or self.optimizer, lambda s: min(1.0, (s + 1) / warmup))
            return self.lr_scheduler

        def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations,
                                  has_tool_images=False):
            ids, logprobs = super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                          has_tool_images)
            if stop:  # close a turn that a stop string ended as the pad (= EOS) closes the others (see stop_strings)
                cap = self.generation_config.max_new_tokens
                for row in ids:
                    if row and row[-1] not in self.eos_token_ids and (len(row) < cap or any(
                            s in tokenizer.decode(row[-8:]) for s in stop)):
                        row.append(tokenizer.eos_token_id)
            return ids, logprobs

        def _generate(self, prompts):
            t0 = time.perf_counter()
            out = super()._generate(prompts)
            row = per_step.setdefault(self.state.global_step + 1, {})
            row["generate_s"] = row.get("generate_s", 0.0) + time.perf_counter() - t0
            return out

        def _generate_and_score_completions(self, inputs):
            t0 = time.perf_counter()
            out = super()._generate_and_score_completions(inputs)
            row = per_step.setdefault(self.state.global_step + 1, {})
            row["rollout_score_ref_s"] = row.get("rollout_score_ref_s", 0.0) + time.perf_counter() - t0
            return out

    class Clock(TrainerCallback):
        def __init__(self):
            self.last, self.times, self.logs = None, [], []

        def on_train_begin(self, args, state, control, **kwargs):
            self.last = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            self.times.append(now - self.last)
            self.last = now

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.logs.append({"step": state.global_step, **(logs or {})})

    stop = list(spec.get("stop") or [])
    generation = {"max_new_tokens": int(spec["max_tokens_per_turn"])} | ({"stop_strings": stop} if stop else {})
    lora = spec["lora"]
    samples = int(spec["samples_per_task"])
    batch = int(spec["tasks_per_step"]) * samples
    micro = int(spec["micro_batch_size"])
    if batch % micro:
        raise SystemExit(f"batch {batch} is not a multiple of micro_batch_size {micro}")
    config = GRPOConfig(
        output_dir=str(Path(args.out).with_suffix("")) + "-trainer", report_to="none", save_strategy="no",
        logging_steps=1, use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False, seed=int(spec["seed"]),
        max_steps=int(spec["steps"]), per_device_train_batch_size=micro, gradient_accumulation_steps=batch // micro,
        num_generations=samples, shuffle_dataset=False, dataloader_pin_memory=False, remove_unused_columns=False,
        learning_rate=float(spec["lr"]), adam_epsilon=float(spec["adam_eps"]), weight_decay=float(spec["weight_decay"]),
        max_grad_norm=float(spec["max_grad_norm"]), beta=float(spec["kl_coef"]), epsilon=float(spec["clip_eps"]),
        loss_type="dapo", scale_rewards="group", num_iterations=1, disable_dropout=True,
        temperature=float(spec["temperature"]), top_p=float(spec["top_p"]), top_k=0,
        max_completion_length=max_completion, generation_kwargs=generation,
        max_tool_calling_iterations=int(spec["max_turns"]) - 1 if spec["tools"] else None,
        use_vllm=False, log_completions=False,
    )
    model = AutoModelForCausalLM.from_pretrained(spec["model_path"], dtype=torch.float32)
    peft_config = LoraConfig(r=int(lora["rank"]), lora_alpha=float(lora["alpha"]), lora_dropout=float(lora["dropout"]),
                             target_modules=list(lora["target_modules"]), bias="none", task_type="CAUSAL_LM")
    clock = Clock()
    trainer = Timed(model=model, reward_funcs=reward, args=config, train_dataset=dataset, processing_class=tokenizer,
                    peft_config=peft_config, tools=[tool] if spec["tools"] else None, callbacks=[clock])
    if stop:  # TRL's HF path calls generate() without the tokenizer, which stop strings need: hand it over
        policy = trainer.accelerator.unwrap_model(trainer.model_wrapped)
        plain_generate = policy.generate
        policy.generate = lambda *a, **kw: plain_generate(*a, **({"tokenizer": tokenizer} | kw))
    setup_s = time.perf_counter() - started
    trainer.train()
    episodes.close()

    logs = {int(entry["step"]): entry for entry in clock.logs if "reward" in entry}
    steps = []
    for i, step_s in enumerate(clock.times):
        step = i + 1
        row = per_step.get(step, {})
        log = logs.get(step, {})
        steps.append({
            "step": step, "step_s": step_s, "generate_s": row.get("generate_s"),
            "rollout_score_ref_s": row.get("rollout_score_ref_s"), "score_s": row.get("score_s"),
            "learn_s": step_s - row.get("rollout_score_ref_s", 0.0),
            "reward": sum(row["rewards"]) / len(row["rewards"]) if row.get("rewards") else None,
            "success": (sum(o >= 1.0 for o in row["outcomes"]) / len(row["outcomes"])
                        if row.get("outcomes") else None),
            "episodes": len(row.get("rewards", [])), "statuses": row.get("statuses"),
            "tool_calls": row.get("tool_calls"), "task_ids": row.get("task_ids"),
            "sampled_tokens": (log["completions/mean_length"] * batch if "completions/mean_length" in log else None),
            "trl_log": log,
        })
    result = {
        "side": spec.get("side", "trl"), "setup_s": setup_s, "wall_s": time.perf_counter() - started, "steps": steps,
        "max_completion_length": max_completion, "max_prompt_tokens": max(prompt_lengths),
        "tools": bool(spec["tools"]), "stop_strings": stop, "threads": torch.get_num_threads(),
        "versions": {"trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__,
                     "peft": peft.__version__},
        "backend": f"HF transformers {transformers.__version__} generate (CPU, fp32, LoRA unmerged"
                   + (f", stop {stop[0]!r})" if stop else ", no stop string)"),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
