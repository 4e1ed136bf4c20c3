"""Warm-start the policy: LoRA SFT on demonstrations, saved as a PEFT adapter for RL, eval and serve.

    python -m jobs.sft                                     # ~2.5 min on 2 CPU cores: 64 calculator expert demos
    python -m jobs.sft --config configs/sft.yaml num_demos=64 lora.rank=8
    python -m jobs.sft demos_path=my_demos.jsonl           # OpenAI-format demonstrations instead of the expert
    ray job submit --working-dir . -- python -m jobs.sft --config configs/sft.yaml

Training runs in this process (plain torch, CUDA when available): one small adapter needs no Ray. Outputs go to
``<storage>/sft-<UTC timestamp>/``: ``config.yaml`` (resolved), ``metrics.json`` and ``adapter/`` (or ``out_dir``).
With ``--config R`` the adapter also fills the warm-start cache entry of ``train.init_adapter: sft:R`` (unless
overrides change what R trains), so a train job after it does not train the same adapter again.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from jobs.config_loader import config_from_cli, save_config
from learners.sft import SFTConfig, train_sft
from learners.sft_data import DemoFormatError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML SFT config (see configs/sft.yaml); fields not given keep defaults")
    parser.add_argument("--list-fields", action="store_true", help="print every config field with its doc")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. epochs=2 lora.rank=8")
    return parser.parse_args(argv)


def format_table(metrics: dict) -> str:
    check = metrics.get("check")
    rows = [
        ("demonstrations", f"{metrics['num_examples']} (skipped as too long: {metrics['skipped_too_long']})"),
        ("steps", str(len(metrics["steps"]))),
        ("tokens", f"{metrics['tokens']} ({metrics['loss_tokens']} trained)"),
        ("loss", f"{metrics['first_loss']:.4f} -> {metrics['final_loss']:.4f}"),
        ("train time", f"{metrics['train_s']:.0f}s ({metrics['tokens_per_s']:.0f} tok/s on {metrics['device']})"),
        ("wall time", f"{metrics['wall_s']:.0f}s"),
    ]
    if check:
        rows.append(("valid tool calls", f"{check['valid']}/{check['tasks']} held-out tasks, greedy "
                                         f"({check['ok']} accepted by the tool)"))
    rows.append(("adapter", metrics["adapter"]))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg, code = config_from_cli(SFTConfig, args.config, args.overrides, args.list_fields)
    if cfg is None:
        return code
    from cluster.model import ModelNotFoundError, resolve_model

    try:
        model_path = resolve_model(cfg.model)
    except ModelNotFoundError as err:
        print(f"model: {err}", file=sys.stderr)
        return 2
    run_dir = Path(cfg.storage) / f"sft-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    out_dir = Path(cfg.out_dir) if cfg.out_dir else run_dir / "adapter"
    print(f"run directory: {run_dir.resolve()}", flush=True)

    try:
        metrics = train_sft(cfg, model_path, out_dir, log=lambda line: print(line, flush=True))
    except DemoFormatError as err:  # a user's demonstration file: say which rows, not a traceback
        print(err, file=sys.stderr)
        return 2

    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(format_table(metrics))
    if args.config:
        from jobs.warm_start import publish_warm_start

        cached = publish_warm_start(Path(args.config), cfg, out_dir, metrics)
        print(f"warm start cache: {cached} (what train.init_adapter: sft:{args.config} loads; an entry already "
              "there is kept)" if cached else
              f"warm start cache: not filled, the overrides change what {args.config} trains")
    return 0


if __name__ == "__main__":
    sys.exit(main())
