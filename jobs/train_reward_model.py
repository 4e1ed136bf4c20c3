"""Train a Bradley–Terry reward model on preference pairs and compare it with a length and a bag-of-words baseline.

    python -m jobs.train_reward_model --config configs/reward_model.yaml          # SYNTHETIC calculator pairs
    python -m jobs.train_reward_model synthetic=null from_trajectories=runs/train-<time>   # a training run's episodes
    python -m jobs.train_reward_model synthetic=null pairs=my_pairs.parquet train.epochs=3
    ray job submit --working-dir . -- python -m jobs.train_reward_model --config configs/reward_model.yaml

Pairs come from exactly one source: a preference Parquet file (``rewards.preferences``), a run's scored
trajectories (best vs worst of each group), or synthetic calculator episodes (``rewards.synthetic_episodes``).
Held-out pairs are whole tasks the model never trained on: a seeded hash of ``task_id`` (``eval_fraction``), or for
synthetic pairs tasks of another split and seed. Every accuracy is measured on the same held-out pairs.

Training runs in this process (plain torch, CUDA when available). Outputs go to
``<storage>/reward-model-<UTC timestamp>/``: ``config.yaml``, ``pairs_train.parquet``, ``pairs_eval.parquet``,
``metrics.json`` and ``model/`` (or ``out_dir``), loadable by ``rewards.reward_model_scorer.RewardModelScorer``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from jobs.config_loader import config_from_cli, doc, save_config
from learners.reward_model import RewardModelConfig
from rewards.preferences import Preference, PreferenceFileError, PreferenceStats
from rewards.synthetic_episodes import CORRUPTIONS, DEFAULT_KINDS

__all__ = ["SyntheticPairs", "TrainRewardModelConfig", "held_out", "main"]


@dataclass(frozen=True)
class SyntheticPairs:
    train_tasks: int = doc(128, "calculator tasks (train split, seed `seed`), one expert-vs-corrupted pair each; "
                                "128 x 2 texts x 128 tokens is ~1 min of training on 2 cores")
    eval_tasks: int = doc(64, "held-out tasks (test split, seed `seed + 1`: other expressions, other numbers)")
    kinds: tuple[str, ...] = doc(DEFAULT_KINDS, "corruptions played in turn (rewards.synthetic_episodes): a final "
                                                "answer that contradicts the tool, which length and a bag of words "
                                                "cannot see")

    def validate(self) -> list[str]:
        problems = [f"{n}: must be >= 1, got {getattr(self, n)}. Fix: set a positive integer"
                    for n in ("train_tasks", "eval_tasks") if getattr(self, n) < 1]
        unknown = [k for k in self.kinds if k not in CORRUPTIONS]
        if unknown or not self.kinds:
            problems.append(f"kinds: unknown {unknown or 'empty list'}. Fix: use some of {list(CORRUPTIONS)}")
        return problems


@dataclass(frozen=True)
class TrainRewardModelConfig:
    pairs: str | None = doc(None, "preference Parquet: prompt, chosen, rejected [+ task_id, group_id, rewards]")
    from_trajectories: str | None = doc(None, "run directory (its trajectories/*.parquet) or Parquet file of "
                                              "scored trajectories; each group's best vs worst becomes a pair")
    synthetic: SyntheticPairs | None = doc(None, "SYNTHETIC calculator pairs instead (docs/reward_model.md); "
                                                 "exactly one of pairs, from_trajectories, synthetic")
    length_tolerance: int | None = doc(4, "pairs built here must differ by at most this many completion tokens "
                                          "(others are dropped and counted) so length cannot be learned; null = off")
    eval_fraction: float = doc(0.2, "share of tasks held out (seeded hash of task_id) for pairs/from_trajectories")
    seed: int = doc(0, "seeds the held-out split and the synthetic tasks (train.seed seeds the model)")
    model: str = doc("smollm2-135m", "base model: the shipped default, a local HF directory or a cached HF id")
    train: RewardModelConfig = doc(RewardModelConfig(), "the reward model and its training")
    bow_l2: float = doc(1e-3, "L2 penalty of the bag-of-words baseline; small: it should get its best shot")
    storage: str = doc("runs", "run outputs go to <storage>/reward-model-<UTC timestamp>/")
    out_dir: str | None = doc(None, "exact model directory; None = <run dir>/model")

    def validate(self) -> list[str]:
        problems = []
        given = [n for n in ("pairs", "from_trajectories", "synthetic") if getattr(self, n) is not None]
        if len(given) != 1:
            problems.append(f"pairs, from_trajectories, synthetic: set exactly one, got {given or 'none'}. Fix: e.g. "
                            "synthetic=null pairs=my_pairs.parquet (configs/reward_model.yaml sets synthetic)")
        if self.pairs is not None and not Path(self.pairs).is_file():
            problems.append(f"pairs: {self.pairs} is not a file. Fix: give a preference Parquet file")
        if self.from_trajectories is not None and not Path(self.from_trajectories).exists():
            problems.append(f"from_trajectories: {self.from_trajectories} does not exist. Fix: give the run directory "
                            "jobs.train or jobs.rollout printed")
        if not 0 < self.eval_fraction < 1:
            problems.append(f"eval_fraction: must be in (0, 1), got {self.eval_fraction}. Fix: use 0.2")
        if self.length_tolerance is not None and self.length_tolerance < 0:
            problems.append(f"length_tolerance: must be >= 0 or null, got {self.length_tolerance}. Fix: use 4")
        if self.bow_l2 < 0:
            problems.append(f"bow_l2: must be >= 0, got {self.bow_l2}. Fix: use 1.0e-3")
        return problems


def held_out(task_id: str, seed: int, fraction: float) -> bool:
    """Whether a task's pairs are held out: a seeded hash, so a task is on one side for every pair and every run.

    >>> sum(held_out(f"task-{i}", 0, 0.2) for i in range(1000)), sum(held_out(f"task-{i}", 1, 0.2) for i in range(1000))
    (207, 191)
    """
    bucket = int.from_bytes(hashlib.sha256(f"{seed}:{task_id}".encode()).digest()[:8], "big") % 10_000
    return bucket < fraction * 10_000


def load_pairs(cfg: TrainRewardModelConfig, tokenizer) -> tuple[list[Preference], list[Preference], dict]:
    """Training pairs, held-out pairs, and how they were built."""
    from rewards.preferences import preferences_from_run, read_preferences
    from rewards.synthetic_episodes import synthetic_preferences

    stats = PreferenceStats()
    if cfg.synthetic is not None:
        common = {"kinds": cfg.synthetic.kinds, "length_tolerance": cfg.length_tolerance}
        train, stats = synthetic_preferences(tokenizer, cfg.synthetic.train_tasks, seed=cfg.seed, split="train",
                                             **common)
        held, held_stats = synthetic_preferences(tokenizer, cfg.synthetic.eval_tasks, seed=cfg.seed + 1,
                                                 split="test", **common)
        return train, held, {"source": "synthetic", **{k: v + held_stats.as_dict()[k]
                                                       for k, v in stats.as_dict().items()}}
    if cfg.pairs is not None:
        pairs, source = read_preferences(cfg.pairs), "pairs"
    else:
        (pairs, stats), source = preferences_from_run(cfg.from_trajectories,
                                                      length_tolerance=cfg.length_tolerance), "trajectories"
    train = [p for p in pairs if not held_out(p.task_id, cfg.seed, cfg.eval_fraction)]
    held = [p for p in pairs if held_out(p.task_id, cfg.seed, cfg.eval_fraction)]
    return train, held, {"source": source, **(stats.as_dict() if source == "trajectories" else {"pairs": len(pairs)})}


def evaluate(model, train: list[Preference], held: list[Preference], bow_l2: float) -> dict:
    """Held-out pairwise accuracy of the reward model and of both baselines (fit on ``train``)."""
    from learners.reward_baselines import BagOfWords, LengthBaseline, pairwise_accuracy

    t0 = time.perf_counter()
    chosen, rejected = model.score([p.prompt + p.chosen for p in held]), model.score([p.prompt + p.rejected
                                                                                      for p in held])
    score_s = time.perf_counter() - t0

    def tokens(pairs: list[Preference], side: str) -> list[list[int]]:  # completions: the prompt is shared
        return model.tokenizer([getattr(p, side) for p in pairs], add_special_tokens=False)["input_ids"]

    tr_c, tr_r, ev_c, ev_r = tokens(train, "chosen"), tokens(train, "rejected"), tokens(held, "chosen"), \
        tokens(held, "rejected")
    length = LengthBaseline.fit([len(t) for t in tr_c], [len(t) for t in tr_r])
    bow = BagOfWords.fit(tr_c, tr_r, l2=bow_l2)

    def ties(c: list[float], r: list[float]) -> int:
        return sum(a == b for a, b in zip(c, r))

    len_c, len_r = length.score([len(t) for t in ev_c]), length.score([len(t) for t in ev_r])
    bow_c, bow_r = bow.score(ev_c), bow.score(ev_r)
    margins = [c - r for c, r in zip(chosen, rejected)]
    return {
        "eval_pairs": len(held),
        "reward_model": {"accuracy": pairwise_accuracy(chosen, rejected), "ties": ties(chosen, rejected),
                         "mean_margin": sum(margins) / len(margins), "score_s": score_s},
        "length": {"rule": length.name, "accuracy": pairwise_accuracy(len_c, len_r), "ties": ties(len_c, len_r),
                   "train_accuracy": pairwise_accuracy(*(length.score([len(t) for t in x]) for x in (tr_c, tr_r)))},
        "bag_of_words": {"accuracy": pairwise_accuracy(bow_c, bow_r), "ties": ties(bow_c, bow_r),
                         "train_accuracy": pairwise_accuracy(bow.score(tr_c), bow.score(tr_r)),
                         "vocabulary": len(bow.vocab)},
    }


def format_table(metrics: dict) -> str:
    ev, tr, data = metrics["eval"], metrics["training"], metrics["data"]
    built = (f"; from {data['groups']} groups, dropped {data['ties']} ties and {data['length_unmatched']} not "
             "length-matched" if "groups" in data else "")
    rows = [
        ("pairs", f"{tr['pairs']} train, {ev['eval_pairs']} held out ({data['source']}{built})"),
        ("loss", f"{tr['first_loss']:.4f} -> {tr['final_loss']:.4f} ({len(tr['steps'])} steps)"),
        ("train time", f"{tr['train_s']:.0f}s ({tr['tokens_per_s']:.0f} tok/s, {tr['truncated_texts']} texts cut to "
                       "max_tokens)"),
        ("held-out accuracy", f"reward model {ev['reward_model']['accuracy']:.3f}"),
        ("  baseline: length", f"{ev['length']['accuracy']:.3f} ({ev['length']['rule']}, {ev['length']['ties']} ties)"),
        ("  baseline: bag of words", f"{ev['bag_of_words']['accuracy']:.3f} ({ev['bag_of_words']['ties']} ties; "
                                     f"train {ev['bag_of_words']['train_accuracy']:.3f})"),
        ("wall time", f"{metrics['wall_s']:.0f}s"),
        ("model", metrics["model"]),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config (see configs/reward_model.yaml); fields not given keep defaults")
    parser.add_argument("--list-fields", action="store_true", help="print every config field with its doc")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.epochs=3 seed=1")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg, code = config_from_cli(TrainRewardModelConfig, args.config, args.overrides, args.list_fields)
    if cfg is None:
        return code
    from cluster.model import ModelNotFoundError
    from learners.reward_model import RewardModel, train_reward_model

    started = time.perf_counter()
    try:
        model = RewardModel.build(cfg.model, cfg.train)
    except ModelNotFoundError as err:
        print(f"model: {err}", file=sys.stderr)
        return 2
    try:
        train, held, data = load_pairs(cfg, model.tokenizer)
    except (PreferenceFileError, FileNotFoundError) as err:  # a user's file: say which rows, not a traceback
        print(err, file=sys.stderr)
        return 2
    if not train or not held:
        print(f"{len(train)} training and {len(held)} held-out pairs: need both. Fix: more tasks or groups, a "
              "different eval_fraction, or a looser length_tolerance", file=sys.stderr)
        return 2
    run_dir = Path(cfg.storage) / f"reward-model-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    from rewards.preferences import write_preferences

    write_preferences(train, run_dir / "pairs_train.parquet")
    write_preferences(held, run_dir / "pairs_eval.parquet")
    print(f"run directory: {run_dir.resolve()}  ({len(train)} train / {len(held)} held-out pairs)", flush=True)

    training = train_reward_model(model, train, cfg.train, log=lambda line: print(line, flush=True))
    out_dir = model.save(Path(cfg.out_dir) if cfg.out_dir else run_dir / "model")
    metrics = {"data": data, "training": training, "eval": evaluate(model, train, held, cfg.bow_l2),
               "model": str(out_dir.resolve()), "wall_s": time.perf_counter() - started}
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(format_table(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
