"""P2, learner throughput: tokens/s of our learner step against a plain PEFT forward/backward loop on the same batch.

    .venv/bin/python bench/learner_throughput.py --trajectories runs/<run>/trajectories/step_00000.parquet
    .venv/bin/python bench/learner_throughput.py --trajectories <parquet> --repeats 3 --algo grpo

Both sides start from the same base model with the same fresh LoRA adapter (the learner config of
configs/train.yaml: rank, dtype, micro-batch size, threads), see the same scored episodes in the same
micro-batches and take one AdamW step over the whole batch. Ours is ``learners.learner.Learner.update``: the
reference pass with the adapter off, the GRPO advantages, the clipped policy loss with the KL term, entropy and
its metrics. The plain loop is what a user would write with PEFT alone: ``model(ids, mask).logits``, log-softmax,
gather the sampled tokens, ``-(advantage * logprob)`` token-mean, backward, step; "plain + ref" adds the same
adapter-off reference forward, so it does the work ours does. Tokens = real (non-pad) tokens of the batch.
Repeats alternate the sides so machine noise hits all of them. Target (issue 6): ratio >= 0.9.
Prints a table, writes bench/results/learner_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from actors.trajectory import read_parquet
from cluster.model import resolve_model
from jobs.config import RunConfig
from jobs.config_loader import load_config
from learners.advantages import grpo_advantages
from learners.collate import collate, split
from learners.learner import Learner
from learners.policy import add_lora, load_base

ROOT = Path(__file__).resolve().parents[1]


def plain_step(model, optimizer, micro, advantages, with_reference: bool) -> None:
    tokens = sum(float(mb.loss_mask.sum()) for mb in micro)
    optimizer.zero_grad(set_to_none=True)
    for mb, adv in zip(micro, advantages):
        targets = mb.input_ids[:, 1:]
        if with_reference:
            with torch.no_grad(), model.disable_adapter():
                ref = torch.log_softmax(model(mb.input_ids, attention_mask=mb.attention_mask).logits[:, :-1].float(),
                                        -1).gather(-1, targets[..., None]).squeeze(-1)
        logits = model(mb.input_ids, attention_mask=mb.attention_mask).logits[:, :-1].float()
        logprobs = torch.log_softmax(logits, -1).gather(-1, targets[..., None]).squeeze(-1)
        loss = -(adv[:, None] * logprobs * mb.loss_mask).sum() / tokens
        if with_reference:
            loss = loss + 0.02 * ((logprobs - ref) * mb.loss_mask).sum() / tokens
        loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trajectories", required=True, help="a step_*.parquet of a training run (scored)")
    parser.add_argument("--config", default=str(ROOT / "configs" / "train.yaml"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "learner_throughput.json"))
    args = parser.parse_args()

    cfg = load_config(RunConfig, args.config).learner
    trajs = read_parquet(args.trajectories)
    model_path = str(resolve_model("smollm2-135m"))
    learner = Learner(cfg, model_path, temperature=1.0)
    torch.manual_seed(cfg.seed)
    plain = add_lora(load_base(model_path, cfg.dtype), cfg.lora)
    optimizer = torch.optim.AdamW([p for p in plain.parameters() if p.requires_grad], lr=cfg.lr)
    micro = split(collate(trajs, learner.pad_id), cfg.micro_batch_size)
    advantages = torch.split(grpo_advantages(torch.tensor([t.reward for t in trajs]), [t.group_id for t in trajs]),
                             cfg.micro_batch_size)
    tokens = sum(int(mb.attention_mask.sum()) for mb in micro)
    sides = {"ours": lambda: learner.update(trajs),
             "plain": lambda: plain_step(plain, optimizer, micro, advantages, with_reference=False),
             "plain + ref": lambda: plain_step(plain, optimizer, micro, advantages, with_reference=True)}
    for run in sides.values():  # warm-up: allocator, thread pools
        run()
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.repeats):
        for name, run in sides.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
    rows = [{"side": name, "seconds_median": statistics.median(ts), "tokens_per_s": tokens / statistics.median(ts),
             "seconds": ts} for name, ts in times.items()]
    ours = rows[0]["tokens_per_s"]
    print(f"{len(trajs)} episodes, {tokens} tokens, micro-batch {cfg.micro_batch_size}, dtype {cfg.dtype}, "
          f"threads {torch.get_num_threads()}")
    print(f"{'side':<12} {'s/step':>8} {'tok/s':>8} {'ours / side':>12}")
    for r in rows:
        print(f"{r['side']:<12} {r['seconds_median']:>8.1f} {r['tokens_per_s']:>8.0f} "
              f"{ours / r['tokens_per_s']:>12.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"bench": "learner_throughput", "episodes": len(trajs), "tokens": tokens,
                               "micro_batch_size": cfg.micro_batch_size, "dtype": cfg.dtype, "rows": rows,
                               "ratio_vs_plain": ours / rows[1]["tokens_per_s"],
                               "ratio_vs_plain_ref": ours / rows[2]["tokens_per_s"]}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
