"""The eval job's config: which tasks, which policies (the base model and adapters), how to play them, and the gate.

Kept apart from ``RunConfig`` (jobs/config.py) because eval neither trains nor needs the learner section, and its
``eval`` section lists policies rather than the training job's held-out task set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from actors.config import RolloutConfig
from cluster.config import ModelConfig, RayConfig
from envs.config import TaskConfig
from jobs.config import RunSection
from jobs.config_loader import doc
from rewards.config import RewardConfig

__all__ = ["EvalJobConfig", "EvalOptions", "GateSection", "BASE", "EVERY_ADAPTER", "parse_adapter"]

BASE = "base"  # the policy name of the base model (no adapter)
EVERY_ADAPTER = "*"  # a gate key that applies to every adapter (not the base)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")  # names become file names, table cells and override keys


def parse_adapter(item: str) -> tuple[str, str]:
    """``"name=path"`` -> ``(name, path)``; ValueError naming the item and the fix.

    >>> parse_adapter("sft=sft")
    ('sft', 'sft')
    >>> parse_adapter("grpo=runs/grpo-calculator-20261123-153417")
    ('grpo', 'runs/grpo-calculator-20261123-153417')
    """
    name, sep, path = item.partition("=")
    name, path = name.strip(), path.strip()
    if not sep or not name or not path:
        raise ValueError(f"{item!r} is not NAME=PATH. Fix: write e.g. sft=sft or grpo=runs/<run dir>")
    if not _NAME.match(name):
        raise ValueError(f"{item!r}: the name {name!r} may only hold letters, digits, '_' and '-'. Fix: rename it")
    if name == BASE:
        raise ValueError(f"{item!r}: {BASE!r} is the base model's name. Fix: give the adapter another name")
    return name, path


@dataclass(frozen=True)
class EvalOptions:
    adapters: list[str] = doc(["sft=sft"], "policies besides the base, as NAME=PATH: an adapter directory, a "
                                           "training run or checkpoint directory (its latest adapter, played on "
                                           "the base it was trained on), or sft / sft:<recipe.yaml> (the cached "
                                           "SFT adapter, as train.init_adapter); jobs/eval_policies.py")
    base: bool = doc(True, "also play the base model itself (policy `base`)")
    baseline: str | None = doc(None, "the policy every other is compared with, task by task (wins, losses, "
                                     "McNemar p); None = `base`, or the first adapter when base is false")
    temperature: float = doc(0.0, "sampling temperature; 0 = greedy, one deterministic episode per task")
    samples_per_task: int = doc(1, "episodes per task and policy; > 1 only makes sense with temperature > 0")
    transcripts: int = doc(4, "episodes per policy written to transcripts.md (the first ones, in task order)")

    def names(self) -> list[str]:
        """Policy names in play order: the base first, then the adapters as listed (invalid items skipped)."""
        names = [BASE] if self.base else []
        for item in self.adapters:
            try:
                names.append(parse_adapter(item)[0])
            except ValueError:
                pass
        return names

    def baseline_name(self) -> str | None:
        names = self.names()
        return self.baseline or (names[0] if names else None)

    def validate(self) -> list[str]:
        from jobs.eval_policies import adapter_problems

        problems, seen = [], set()
        for i, item in enumerate(self.adapters):
            try:
                name, path = parse_adapter(item)
            except ValueError as err:
                problems.append(f"adapters[{i}]: {err}")
                continue
            if name in seen:
                problems.append(f"adapters[{i}]: the name {name!r} is used twice. Fix: give each adapter its own name")
            seen.add(name)
            problems += [f"adapters[{i}] ({name}): {p}" for p in adapter_problems(path)]
        if not self.names() and not problems:
            problems.append("adapters: nothing to evaluate (base is false and no adapter is given). Fix: set "
                            "eval.base=true or give --adapter NAME=PATH")
        if self.baseline is not None and self.baseline not in self.names():
            problems.append(f"baseline: {self.baseline!r} is not one of the policies {self.names()}. Fix: name one "
                            "of them, or leave it null")
        if self.temperature < 0:
            problems.append(f"temperature: must be >= 0, got {self.temperature}. Fix: 0 for greedy")
        if self.samples_per_task < 1:
            problems.append(f"samples_per_task: must be >= 1, got {self.samples_per_task}. Fix: 1 for greedy")
        elif self.samples_per_task > 1 and self.temperature == 0:
            problems.append(f"samples_per_task: {self.samples_per_task} greedy episodes of a task are identical. "
                            "Fix: set eval.temperature > 0 (e.g. 1.0), or samples_per_task=1")
        if self.transcripts < 0:
            problems.append(f"transcripts: must be >= 0, got {self.transcripts}. Fix: 0 writes none")
        return problems


@dataclass(frozen=True)
class GateSection:
    min_success: dict[str, float] = doc({}, "policy name (or * = every adapter) -> lowest task success rate "
                                            "(0-1, all envs) that passes; --min-success 0.6 sets *")
    min_reward: dict[str, float] = doc({}, "policy name (or *) -> lowest mean reward that passes")
    max_tool_error_rate: dict[str, float] = doc({}, "policy name (or *) -> highest share of tool calls that "
                                                    "failed or did not parse (0-1)")
    max_safety_violation_rate: dict[str, float] = doc({}, "policy name (or *) -> highest share of episodes with "
                                                          "a safety violation (0-1; envs that have them)")
    min_wins_over_baseline: dict[str, int] = doc({}, "policy name (or *) -> fewest net tasks gained over the "
                                                     "baseline (wins - losses) that passes")

    def rules(self) -> dict[str, dict]:
        return {"min_success": self.min_success, "min_reward": self.min_reward,
                "max_tool_error_rate": self.max_tool_error_rate,
                "max_safety_violation_rate": self.max_safety_violation_rate,
                "min_wins_over_baseline": self.min_wins_over_baseline}

    def validate(self) -> list[str]:
        problems = []
        for rule, limits in self.rules().items():
            for name, value in limits.items():
                if (rule == "min_success" or rule.endswith("_rate")) and not 0 <= value <= 1:
                    problems.append(f"{rule}.{name}: must be a rate in [0, 1], got {value}. Fix: e.g. 0.6 for 60%")
        return problems


@dataclass(frozen=True)
class EvalJobConfig:
    run: RunSection = doc(RunSection(name="eval"), "run name and where the report goes")
    model: ModelConfig = doc(ModelConfig(), "the base model (adapters given as directories are played on it)")
    ray: RayConfig = doc(RayConfig(), "which Ray cluster to use")
    rollout: RolloutConfig = doc(RolloutConfig(samples_per_task=1, max_turns=3, max_tokens_per_turn=96,
                                               max_total_tokens=900),
                                 "the engine and episode limits (eval.temperature replaces rollout.temperature)")
    tasks: TaskConfig = doc(TaskConfig(num_tasks=128, split="test", seed=1234),
                            "the tasks: a file (tasks.path; Parquet or JSONL, any envs) or an env's generator")
    reward: RewardConfig = doc(RewardConfig(), "how episodes are scored (reward and its breakdown)")
    eval: EvalOptions = doc(EvalOptions(), "the policies and how they play")
    gate: GateSection = doc(GateSection(), "release gate: the job exits 1 when a policy misses a threshold")

    def validate(self) -> list[str]:
        names = set(self.eval.names())
        problems = []
        for rule, limits in self.gate.rules().items():
            for name in limits:
                if name == EVERY_ADAPTER and not names - {BASE}:
                    problems.append(f"gate.{rule}.{name}: there is no adapter to gate. Fix: add --adapter NAME=PATH")
                elif name != EVERY_ADAPTER and name not in names:
                    problems.append(f"gate.{rule}.{name}: no policy named {name!r} (policies: {sorted(names)}). "
                                    f"Fix: use one of them, or {EVERY_ADAPTER} for every adapter")
        if self.gate.min_wins_over_baseline and self.eval.baseline_name() in self.gate.min_wins_over_baseline:
            problems.append(f"gate.min_wins_over_baseline.{self.eval.baseline_name()}: the baseline cannot beat "
                            "itself. Fix: gate the other policies")
        return problems
