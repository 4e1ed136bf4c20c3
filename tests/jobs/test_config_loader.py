"""jobs.config_loader: YAML + overrides -> frozen dataclasses, every problem named with its fix, all at once."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest
import yaml

from jobs.config_loader import (
    ConfigError,
    describe,
    from_dict,
    load_config,
    merge,
    parse_overrides,
    save_config,
    to_dict,
    undocumented,
)

# ---------------------------------------------------------------------------------------------------------------------
# Small configs shaped like the real ones: a nested section inside a section, a Literal, Optionals, lists, a tuple,
# a dict, validate() hooks at two levels. Module level, because get_type_hints resolves names in module globals.


@dataclass(frozen=True)
class OptimConfig:
    betas: tuple[float, ...] = field(default=(0.9, 0.999), metadata={"doc": "Adam betas (unitless); torch defaults."})
    weight_decay: float = field(default=0.0, metadata={"doc": "L2 decay (unitless); 0 because LoRA is small."})


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = field(default=1.0, metadata={"doc": "Sampling temperature (unitless); 1.0 = the policy."})
    max_tokens: int = field(default=64, metadata={"doc": "New tokens per turn (tokens); fits a tool call."})
    stop: list[str] = field(default_factory=lambda: ["</tool_call>"], metadata={"doc": "Stop strings; end a call."})
    seed: Optional[int] = field(  # noqa: UP045 - the loader must accept both spellings
        default=None, metadata={"doc": "Sampling seed; None = nondeterministic."}
    )

    def validate(self) -> list[str]:
        problems = []
        if self.temperature <= 0:
            problems.append(
                f"temperature: must be > 0, got {self.temperature}. Fix: set it to a positive number, e.g. 1.0"
            )
        if self.max_tokens < 1:
            problems.append(f"max_tokens: must be >= 1, got {self.max_tokens}. Fix: set it to e.g. 64")
        return problems


@dataclass(frozen=True)
class LearnerConfig:
    algo: Literal["grpo", "ppo", "rloo"] = field(default="grpo", metadata={"doc": "Advantage estimator; no critic."})
    lr: float = field(default=1e-5, metadata={"doc": "Learning rate (per step); LoRA-sized."})
    kl_coef: float | None = field(default=None, metadata={"doc": "KL weight; None = no KL term."})
    use_value_head: bool = field(default=False, metadata={"doc": "Train a critic; only PPO needs it."})
    min_batch: int = field(default=4, metadata={"doc": "Smallest batch (episodes)."})
    max_batch: int = field(default=32, metadata={"doc": "Largest batch (episodes); fits 23 GiB."})
    optim: OptimConfig = field(default_factory=OptimConfig, metadata={"doc": "Optimizer settings."})

    def validate(self) -> list[str]:
        if self.min_batch > self.max_batch:
            return [f"min_batch: {self.min_batch} > max_batch {self.max_batch}. Fix: make min_batch <= max_batch"]
        return []


@dataclass(frozen=True)
class ToyRunConfig:
    name: str = field(default="toy", metadata={"doc": "Run name; names the run directory."})
    tags: list[str] = field(default_factory=list, metadata={"doc": "Free-form labels for the tracker."})
    resources: dict[str, float] = field(default_factory=dict, metadata={"doc": "Extra Ray resources per worker."})
    sampling: SamplingConfig = field(default_factory=SamplingConfig, metadata={"doc": "Rollout sampling."})
    learner: LearnerConfig = field(default_factory=LearnerConfig, metadata={"doc": "Policy update."})

    def validate(self) -> list[str]:
        if self.learner.algo == "ppo" and not self.learner.use_value_head:
            return ["learner.use_value_head: ppo needs a critic. Fix: set learner.use_value_head=true or algo=grpo"]
        return []


@dataclass(frozen=True)
class NeedsName:
    name: str = field(metadata={"doc": "No default: must be given."})
    size: int = field(default=1, metadata={})

    def __post_init__(self) -> None:
        if self.name == "forbidden":
            raise ValueError("name: 'forbidden' is reserved. Fix: pick another name")


@dataclass(frozen=True)
class WithOptionalSection:
    value_head: OptimConfig | None = field(default=None, metadata={"doc": "Absent unless a critic is trained."})
    window: tuple[int, int] = field(default=(0, 8), metadata={"doc": "Token span [start, end)."})
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(weight_decay=0.01), metadata={"doc": "A default unlike the class's."}
    )


def problems_of(cls: type, data: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        from_dict(cls, data)
    return info.value.problems


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------------------------------
# Building


def test_defaults_without_file_or_overrides() -> None:
    cfg = load_config(ToyRunConfig)
    assert cfg == ToyRunConfig()
    assert cfg.sampling.stop == ["</tool_call>"] and cfg.learner.optim.betas == (0.9, 0.999)
    assert dataclasses.is_dataclass(cfg) and type(cfg.learner.optim) is OptimConfig


def test_yaml_then_overrides_later_wins_and_partial_sections_keep_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path, "sampling:\n  temperature: 0.5\n  max_tokens: 32\nlearner:\n  optim:\n    weight_decay: 0.1\n"
    )
    cfg = load_config(ToyRunConfig, path, ["sampling.temperature=0.7", "learner.lr=3e-4", "tags=[a, b]"])
    assert cfg.sampling.temperature == 0.7  # override beats file
    assert cfg.sampling.max_tokens == 32  # file beats default
    assert cfg.sampling.stop == ["</tool_call>"]  # untouched field of a touched section keeps its default
    assert cfg.learner.optim == OptimConfig(weight_decay=0.1)
    assert cfg.learner.lr == pytest.approx(3e-4) and isinstance(cfg.learner.lr, float)
    assert cfg.tags == ["a", "b"]


def test_float_accepts_int_and_yaml_exponent_without_dot(tmp_path: Path) -> None:
    cfg = load_config(ToyRunConfig, write(tmp_path, "learner:\n  lr: 1e-5\nsampling:\n  temperature: 1\n"))
    assert cfg.learner.lr == 1e-5 and type(cfg.learner.lr) is float  # plain PyYAML reads `1e-5` as a string
    assert cfg.sampling.temperature == 1.0 and type(cfg.sampling.temperature) is float


def test_optional_tuple_and_dict_fields() -> None:
    cfg = from_dict(
        ToyRunConfig,
        {"learner": {"kl_coef": 0.05, "optim": {"betas": [0.9, 0.95]}}, "resources": {"gpu_type": 1}},
    )
    assert cfg.learner.kl_coef == 0.05
    assert cfg.learner.optim.betas == (0.9, 0.95) and isinstance(cfg.learner.optim.betas, tuple)
    assert cfg.resources == {"gpu_type": 1.0}
    assert from_dict(ToyRunConfig, {"learner": {"kl_coef": None}}).learner.kl_coef is None
    assert from_dict(ToyRunConfig, {"sampling": {"seed": 3}}).sampling.seed == 3


# ---------------------------------------------------------------------------------------------------------------------
# Overrides


def test_parse_overrides_values_are_yaml() -> None:
    parsed = parse_overrides(
        [
            "sampling.temperature=0.7",
            "sampling.max_tokens=128",
            "learner.lr=1e-5",
            "learner.kl_coef=null",
            "tags=[a,b]",
            "name=a=b",
            "learner.optim.betas=[0.9, 0.95]",
            "note=#3",
            "empty=",
            "flag=true",
        ]
    )
    assert parsed == {
        "sampling": {"temperature": 0.7, "max_tokens": 128},
        "learner": {"lr": 1e-5, "kl_coef": None, "optim": {"betas": [0.9, 0.95]}},
        "tags": ["a", "b"],
        "name": "a=b",
        "note": "#3",
        "empty": "",
        "flag": True,
    }


def test_parse_overrides_later_duplicate_wins_and_mappings_merge() -> None:
    assert parse_overrides(["a.b=1", "a.b=2"]) == {"a": {"b": 2}}
    assert parse_overrides(["a={x: 1}", "a.y=2"]) == {"a": {"x": 1, "y": 2}}
    assert parse_overrides(["a.y=2", "a={x: 1}"]) == {"a": {"x": 1, "y": 2}}  # a mapping merges, as with the file


def test_parse_overrides_reports_every_malformed_item() -> None:
    with pytest.raises(ConfigError) as info:
        parse_overrides(["sampling.temperature", "=3", "a..b=1", "x=[1, 2", "k=1", "k.sub=2"])
    text = str(info.value)
    assert len(info.value.problems) == 5
    assert "override 'sampling.temperature': expected key.sub=value" in text
    assert "override '=3'" in text and "override 'a..b=1'" in text
    assert "override 'x=[1, 2'" in text and "invalid YAML" in text
    assert "override 'k.sub=2': k was already set" in text


def test_overrides_go_through_the_same_checks() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(ToyRunConfig, None, ["sampling.temprature=0.7", "learner.algo=gpro"])
    assert info.value.problems[0] == "sampling.temprature: unknown key. Did you mean sampling.temperature?"
    assert "learner.algo: must be one of" in info.value.problems[1]


def test_merge_is_deep_and_does_not_mutate() -> None:
    base = {"a": {"x": 1, "y": 2}, "l": [1, 2]}
    out = merge(base, {"a": {"y": 3}, "l": [9]})
    assert out == {"a": {"x": 1, "y": 3}, "l": [9]}
    assert base == {"a": {"x": 1, "y": 2}, "l": [1, 2]}


# ---------------------------------------------------------------------------------------------------------------------
# Problems


def test_unknown_key_suggests_the_closest_known_key() -> None:
    assert problems_of(ToyRunConfig, {"sampling": {"temprature": 0.7}}) == [
        "sampling.temprature: unknown key. Did you mean sampling.temperature?"
    ]
    assert problems_of(ToyRunConfig, {"learner": {"optim": {"wieght_decay": 0.1}}}) == [
        "learner.optim.wieght_decay: unknown key. Did you mean learner.optim.weight_decay?"
    ]


def test_misplaced_key_points_to_its_section() -> None:
    assert problems_of(ToyRunConfig, {"temperature": 0.7}) == [
        "temperature: unknown key. Did you mean sampling.temperature?"
    ]


def test_unknown_key_without_close_match_lists_known_keys() -> None:
    (problem,) = problems_of(ToyRunConfig, {"sampling": {"zzz": 1}})
    assert problem.startswith("sampling.zzz: unknown key. Known keys in sampling:")
    for key in ("temperature", "max_tokens", "stop", "seed"):
        assert key in problem


def test_wrong_types_at_depth_name_the_full_path_and_fix() -> None:
    problems = problems_of(
        ToyRunConfig,
        {"learner": {"optim": {"betas": [0.9, "high"], "weight_decay": "a lot"}}, "sampling": {"stop": "</s>"}},
    )
    text = "\n".join(problems)
    assert "learner.optim.betas[1]: expected float, got str 'high'" in text
    assert (
        "learner.optim.weight_decay: expected float, got str 'a lot'. Fix: set learner.optim.weight_decay to a number"
        in text
    )
    assert "sampling.stop: expected list[str], got str '</s>'" in text
    assert len(problems) == 3


def test_bool_is_strict_and_int_rejects_bool() -> None:
    for bad in (1, 0, "true", "yes", 1.0):
        (problem,) = problems_of(ToyRunConfig, {"learner": {"use_value_head": bad}})
        assert problem.startswith(f"learner.use_value_head: expected bool, got {type(bad).__name__}")
        assert "true or false" in problem
    (problem,) = problems_of(ToyRunConfig, {"sampling": {"max_tokens": True}})
    assert problem.startswith("sampling.max_tokens: expected int, got bool True")
    (problem,) = problems_of(ToyRunConfig, {"sampling": {"max_tokens": 2.5}})
    assert problem.startswith("sampling.max_tokens: expected int, got float 2.5")


def test_str_field_rejects_numbers_with_a_quoting_hint() -> None:
    (problem,) = problems_of(ToyRunConfig, {"name": 123})
    assert problem.startswith("name: expected str, got int 123") and "quote it" in problem


def test_literal_problem_lists_allowed_values() -> None:
    (problem,) = problems_of(ToyRunConfig, {"learner": {"algo": "gpro"}})
    assert problem.startswith("learner.algo: must be one of grpo, ppo, rloo; got str 'gpro'.")
    assert "Did you mean 'grpo'?" in problem


def test_optional_reports_null_as_allowed() -> None:
    (problem,) = problems_of(ToyRunConfig, {"learner": {"kl_coef": "lots"}})
    assert problem.startswith("learner.kl_coef: expected float | null, got str 'lots'")


def test_section_given_as_scalar_and_scalar_given_as_section() -> None:
    problems = problems_of(ToyRunConfig, {"sampling": 0.7, "learner": {"lr": {"value": 1}}})
    assert problems[0].startswith(
        "sampling: is a section (SamplingConfig), got float 0.7. Fix: give sampling as a mapping"
    )
    assert problems[1].startswith("learner.lr: expected float, got a mapping with keys value")
    assert "a section where a single value belongs" in problems[1]


def test_several_problems_reported_together() -> None:
    data = {
        "nme": "x",
        "sampling": {"temperature": "hot", "max_tokens": -1},
        "learner": {"algo": "dpo", "use_value_head": 1},
        "tags": ["ok", 7],
    }
    with pytest.raises(ConfigError) as info:
        from_dict(ToyRunConfig, data)
    problems = info.value.problems
    assert len(problems) == 5
    assert problems[0] == "nme: unknown key. Did you mean name?"
    expected = ["tags[1]: expected str", "sampling.temperature: expected float", "learner.algo: must be one of"]
    for start in [*expected, "learner.use_value_head: expected bool"]:
        assert any(p.startswith(start) for p in problems), start
    assert str(info.value).startswith("invalid config (5 problems):\n  - nme: unknown key.")


def test_validate_problems_get_the_dotted_prefix() -> None:
    problems = problems_of(
        ToyRunConfig, {"sampling": {"temperature": -1.0}, "learner": {"min_batch": 64, "algo": "ppo"}}
    )
    assert problems == [
        "sampling.temperature: must be > 0, got -1.0. Fix: set it to a positive number, e.g. 1.0",
        "learner.min_batch: 64 > max_batch 32. Fix: make min_batch <= max_batch",
        "learner.use_value_head: ppo needs a critic. Fix: set learner.use_value_head=true or algo=grpo",
    ]


def test_validate_skipped_for_a_section_with_type_problems_but_run_for_its_siblings() -> None:
    # sampling.max_tokens=0 would fail validate(), but the section has a type problem, so validate() is not called;
    # learner built cleanly, so its validate() runs; the root cannot be built, so its cross-section check does not.
    problems = problems_of(
        ToyRunConfig,
        {"sampling": {"temperature": "hot", "max_tokens": 0}, "learner": {"min_batch": 64, "algo": "ppo"}},
    )
    assert len(problems) == 2
    assert problems[0].startswith("sampling.temperature: expected float")
    assert problems[1] == "learner.min_batch: 64 > max_batch 32. Fix: make min_batch <= max_batch"


def test_required_field_and_post_init_error_are_problems() -> None:
    assert problems_of(NeedsName, {}) == [
        "name: required, has no default. Fix: set name in the YAML file or as name=..."
    ]
    assert problems_of(NeedsName, {"name": "forbidden"}) == [
        "<top level>: name: 'forbidden' is reserved. Fix: pick another name"
    ]


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(ToyRunConfig, write(tmp_path, "- a\n- b\n"))
    assert "top level must be a mapping" in info.value.problems[0] and "run.yaml" in info.value.problems[0]
    assert problems_of(ToyRunConfig, [1, 2])[0].startswith("<top level>: must be a mapping")  # type: ignore[arg-type]


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(ToyRunConfig, write(tmp_path, "# nothing set\n")) == ToyRunConfig()


# ---------------------------------------------------------------------------------------------------------------------
# Files


def test_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(ToyRunConfig, missing)
    assert info.value.problems == [
        f"config file {missing}: not found. Fix: check the path, or pass no file to use the defaults"
    ]


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "sampling:\n  temperature: 0.7\n  max_tokens: [1, 2\nlearner: {}\n")
    with pytest.raises(ConfigError) as info:
        load_config(ToyRunConfig, path, ["bad-override"])
    problems = info.value.problems
    assert problems[0].startswith(f"config file {path}, line 4")
    assert "invalid YAML" in problems[0]
    assert problems[1].startswith("override 'bad-override'")  # override problems come in the same error


def test_duplicate_yaml_key_is_an_error_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "sampling:\n  temperature: 0.7\n  temperature: 0.9\n")
    with pytest.raises(ConfigError) as info:
        load_config(ToyRunConfig, path)
    assert f"config file {path}, line 3" in info.value.problems[0]
    assert "duplicate key 'temperature'" in info.value.problems[0]


def test_save_then_load_round_trips(tmp_path: Path) -> None:
    cfg = from_dict(
        ToyRunConfig,
        {
            "name": "1e5",  # a string that looks like a float must come back a string
            "tags": ["yes", "null"],
            "resources": {"accel": 0.5},
            "sampling": {"temperature": 0.7, "seed": 7, "stop": []},
            "learner": {"lr": 3e-6, "kl_coef": 0.02, "optim": {"betas": [0.8, 0.9]}},
        },
    )
    path = tmp_path / "out" / "config.yaml"
    save_config(cfg, path)
    text = path.read_text()
    assert text.startswith("# Resolved ToyRunConfig")
    assert "weight_decay: 0.0" in text  # defaults are written too
    assert load_config(ToyRunConfig, path) == cfg
    assert yaml.safe_load(text)["learner"]["lr"] == 3e-6  # stays readable by plain PyYAML, not only our loader


def test_to_dict_is_plain() -> None:
    data = to_dict(ToyRunConfig())
    assert data["learner"]["optim"] == {"betas": [0.9, 0.999], "weight_decay": 0.0}
    assert data["sampling"]["seed"] is None and data["tags"] == []
    assert yaml.safe_dump(data)  # no tuples or dataclasses left


# ---------------------------------------------------------------------------------------------------------------------
# Help


def test_describe_lists_every_field_with_type_default_and_doc() -> None:
    text = describe(ToyRunConfig)
    assert "sampling.temperature: float = 1.0\n    Sampling temperature (unitless); 1.0 = the policy." in text
    assert "learner.algo: Literal[grpo, ppo, rloo] = grpo" in text
    assert "learner.kl_coef: float | null = null" in text
    assert "learner.optim: section OptimConfig\n    Optimizer settings." in text
    assert "learner.optim.betas: tuple[float, ...] = [0.9, 0.999]" in text
    assert "sampling.stop: list[str] = [</tool_call>]" in text
    for f in dataclasses.fields(SamplingConfig):
        assert f.metadata["doc"] in text
    assert "(required)" in describe(NeedsName)


def test_undocumented_finds_fields_without_doc() -> None:
    assert undocumented(ToyRunConfig) == []
    assert undocumented(NeedsName) == ["size"]


def test_optional_section_and_fixed_tuple() -> None:
    assert from_dict(WithOptionalSection, {}).value_head is None
    cfg = from_dict(WithOptionalSection, {"value_head": {"weight_decay": 0.5}, "window": [2, 4]})
    assert cfg.value_head == OptimConfig(weight_decay=0.5) and cfg.window == (2, 4)
    problems = problems_of(WithOptionalSection, {"value_head": {"weight_decya": 0.5}, "window": [1, 2, 3]})
    assert problems == [
        "value_head.weight_decya: unknown key. Did you mean value_head.weight_decay?",
        "window: expected 2 items (tuple[int, int]), got 3. Fix: set window to a list of exactly 2 items",
    ]


def test_partial_section_keeps_the_fields_default_not_the_class_default() -> None:
    cfg = from_dict(WithOptionalSection, {"optim": {"betas": [0.5, 0.6]}})
    assert cfg.optim == OptimConfig(betas=(0.5, 0.6), weight_decay=0.01)
    assert from_dict(WithOptionalSection, {}).optim.weight_decay == 0.01
    assert "optim.weight_decay: float = 0.01" in describe(WithOptionalSection)
