"""The run config: one frozen dataclass per package, composed here, loaded from one YAML file + overrides."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from actors.config import RolloutConfig
from cluster.config import ModelConfig, RayConfig
from envs.config import TaskConfig
from jobs.config_loader import doc, save_config
from jobs.warm_start import check_init_adapter
from learners.config import LearnerConfig
from rewards.config import RewardConfig


@dataclass(frozen=True)
class RunSection:
    name: str = doc("calculator", "run name; outputs go to <storage>/<name>-<UTC timestamp>")
    storage: str = doc("runs", "where run outputs and checkpoints go: a local or shared path")
    run_dir: str | None = doc(None, "exact run directory (e.g. to resume); None = a fresh timestamped one")

    def validate(self) -> list[str]:
        if "://" in self.storage:
            return [f"storage: {self.storage!r} is a URI; this version writes to paths only. Fix: mount the "
                    "bucket (e.g. a shared volume) and give its path"]
        return []


@dataclass(frozen=True)
class TrainSection:
    steps: int = doc(6, "RL steps (rollout -> reward -> update -> sync); ~2 min each on 2 CPU cores")
    tasks_per_step: int = doc(8, "tasks per step; episodes per step = tasks_per_step * rollout.samples_per_task")
    checkpoint_every: int = doc(2, "steps between checkpoints (adapter, optimizer, step, RNG, task cursor)")
    init_adapter: str | None = doc("sft", "warm start, merged into the base, which is then the reference; RL trains "
                                          "a fresh adapter on top. `sft` = the shipped SFT recipe (configs/sft.yaml), "
                                          "trained once and cached; `sft:<recipe.yaml>`; an adapter directory; or "
                                          "null for the bare base model (jobs/warm_start.py)")
    max_failures: int = doc(2, "learner-group restarts from the latest checkpoint before the run fails")
    mode: str = doc("sync", "sync: play, score, update, sync, in turn. async: the rollout pool plays the next batches "
                            "with the newest adapter while the learner trains (docs/performance.md)")
    stratify_kinds: bool = doc(False, "spread each epoch's task order by meta.kind, so every step's tasks hold each "
                                      "kind in about its share of the pool (actors/task_order.py); off: a plain "
                                      "shuffle, whose per-step mix swings with few tasks a step")
    max_staleness: int = doc(0, "async: the most adapter versions a trajectory may lag the learner when it trains on "
                                "it (older batches are played again, counted); 1 = one-step off-policy. 0 in sync")

    def validate(self) -> list[str]:
        problems = []
        for name in ("steps", "tasks_per_step", "checkpoint_every"):
            if getattr(self, name) < 1:
                problems.append(f"{name}: must be >= 1, got {getattr(self, name)}. Fix: set a positive integer")
        if self.mode not in ("sync", "async"):
            problems.append(f"mode: {self.mode!r} unknown. Fix: use sync or async")
        elif self.mode == "sync" and self.max_staleness != 0:
            problems.append(f"max_staleness: {self.max_staleness} but mode is sync, where every batch is played with "
                            "the newest adapter. Fix: set train.mode=async, or max_staleness=0")
        elif self.mode == "async" and self.max_staleness < 1:
            problems.append(f"max_staleness: async mode needs >= 1, got {self.max_staleness}. Fix: set "
                            "train.max_staleness=1 (or use train.mode=sync)")
        return problems + check_init_adapter(self.init_adapter)


@dataclass(frozen=True)
class EvalSection:
    tasks: TaskConfig = doc(TaskConfig(num_tasks=128, split="test", seed=1234), "held-out tasks, one greedy "
                                                                                "episode each")
    every: int = doc(0, "evaluate every N steps as well; 0 = only before the first and after the last step, "
                        "-1 = never")

    def validate(self) -> list[str]:
        return [] if self.every >= -1 else [f"every: must be >= -1, got {self.every}. Fix: 0 (start and end)"]

    def due(self, step: int, steps: int) -> bool:
        """Evaluate after ``step`` updates (0 = before training)?"""
        if self.every < 0:
            return False
        return step in (0, steps) or (self.every > 0 and step % self.every == 0)


@dataclass(frozen=True)
class RunConfig:
    run: RunSection = doc(RunSection(), "run name and output location")
    model: ModelConfig = doc(ModelConfig(), "the policy's base model")
    ray: RayConfig = doc(RayConfig(), "which Ray cluster to use")
    rollout: RolloutConfig = doc(RolloutConfig(), "rollout workers: engine and episode limits")
    tasks: TaskConfig = doc(TaskConfig(), "the tasks to play")
    reward: RewardConfig = doc(RewardConfig(), "reward components and weights")
    learner: LearnerConfig = doc(LearnerConfig(), "the RL update and the learner group")
    train: TrainSection = doc(TrainSection(), "the training loop")
    eval: EvalSection = doc(EvalSection(), "greedy evaluation on held-out tasks, paired task by task")

    def validate(self) -> list[str]:
        problems = []
        if self.learner.lora.rank > self.rollout.max_lora_rank:
            problems.append(f"learner.lora.rank: {self.learner.lora.rank} exceeds rollout.max_lora_rank "
                            f"{self.rollout.max_lora_rank}. Fix: raise rollout.max_lora_rank to an allowed value")
        serving = self.rollout.adapter_serving  # auto merges on CPU engines, in sync mode
        if self.reward.judge == "rollout" and (serving == "merged" or (
                serving == "auto" and not self.rollout.num_gpus_per_worker and self.train.mode != "async")):
            problems.append(f"reward.judge: rollout asks the rollout engine's base model, but rollout.adapter_serving="
                            f"{serving} merges the adapter into the engine's weights (auto: on CPU), so the base model "
                            "is not there. Fix: set rollout.adapter_serving=lora, or reward.judge=actor with "
                            "reward.judge_model")
        return problems

    def training_problems(self) -> list[str]:
        """Checks that only matter when the config trains (the rollout job may play one episode per task)."""
        problems = []
        algo = self.learner.algo
        if algo in ("grpo", "rloo") and self.rollout.samples_per_task < 2:
            problems.append(f"rollout.samples_per_task: {algo} needs groups of >= 2 episodes per task, got "
                            f"{self.rollout.samples_per_task}. Fix: set rollout.samples_per_task=4")
        weighted = sorted(name for name, weight in self.reward.process_weights.items() if weight)
        if weighted and algo in ("grpo", "rloo") and self.learner.process_reward_mode == "none":
            problems.append(f"reward.process_weights: {weighted} are weighted, but {algo} with "
                            "learner.process_reward_mode=none never reads turn rewards, so they would change nothing. "
                            "Fix: set learner.process_reward_mode=add (or turn), or weight them 0 to log them only")
        problems += _async_problems(self)
        if self.learner.process_reward_mode != "none" and not weighted:
            problems.append(f"learner.process_reward_mode: {self.learner.process_reward_mode!r} but no "
                            "reward.process_weights is > 0, so every turn "
                            "reward is 0 and the process advantage is 0. Fix: e.g. "
                            "reward.process_weights.tool_call_validity=1.0, or process_reward_mode=none")
        return problems


def _async_problems(cfg: RunConfig) -> list[str]:
    """Async mode's cross-section rules: several adapter versions resident, importance weights on."""
    s, r = cfg.train.max_staleness, cfg.rollout
    if cfg.train.mode != "async" or s < 1:
        return []
    problems = []
    if r.adapter_serving == "merged":
        problems.append("rollout.adapter_serving: 'merged' holds one adapter version in the weights, so it is "
                        "sync-only; async mode serves several versions at once. Fix: set rollout.adapter_serving=lora "
                        "(auto means lora in async mode), or train.mode=sync")
    for name in ("max_loras", "keep_versions"):
        if getattr(r, name) < s + 1:
            problems.append(f"rollout.{name}: {getattr(r, name)} < max_staleness + 1 = {s + 1}: an episode's version "
                            f"could be unloaded while it plays. Fix: set rollout.{name}={s + 1}")
    if cfg.learner.tis_cap is None:
        problems.append("learner.tis_cap: async batches are sampled by older adapter versions; without truncated "
                        "importance weights the update ignores that. Fix: set learner.tis_cap=2.0")
    return problems


def make_run_dir(cfg: RunConfig) -> Path:
    """Create the run directory and save the resolved config in it (what actually ran, overrides included)."""
    if cfg.run.run_dir:
        path = Path(cfg.run.run_dir)
    else:
        path = Path(cfg.run.storage) / f"{cfg.run.name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    path.mkdir(parents=True, exist_ok=True)
    save_config(cfg, path / "config.yaml")
    return path.resolve()
