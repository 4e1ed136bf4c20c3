from __future__ import annotations

import dataclasses
import math

import pytest

from actors.trajectory import check_invariants
from jobs.config_loader import ConfigError, from_dict, load_config
from rewards import SCORERS, RewardConfig, classify_calls, combine, efficiency, format_validity, outcome, tool_use
from rewards._examples import example_task, example_trajectory, parse_error, tool_call

TASK = example_task(answer=391, expression="17 * 23")
RIGHT, WRONG_ANSWER = "17 * 23 = 391.", "17 * 23 = 381."
FAILED_CALLS = {
    "bad arguments": tool_call("error: invalid arguments for 'calculator'", ok=False),
    "tool error": tool_call("error: division by zero", ok=False, expression="1/0"),
    "unparsable": parse_error(),
}
WRONG_CALL = tool_call("381", expression="17 * 23 - 10")
CORRECT_CALL = tool_call("391")


def total(calls, answer: str | None, cfg: RewardConfig | None = None, **kw) -> float:
    return combine(example_trajectory(calls=calls, final_answer=answer, **kw), TASK, cfg or RewardConfig())[0]


def test_examples_are_sound_trajectories():
    traj = example_trajectory(calls=[FAILED_CALLS["unparsable"], WRONG_CALL, CORRECT_CALL], final_answer=RIGHT)
    assert check_invariants(traj) == []
    assert len(traj.turns) == 4 and traj.parse_errors == 1


# ---- the ordering the product card asks for, in the total with default weights ----


@pytest.mark.parametrize("answer", [RIGHT, WRONG_ANSWER], ids=["right answer", "wrong answer"])
@pytest.mark.parametrize("failed", list(FAILED_CALLS), ids=list(FAILED_CALLS))
def test_failed_call_lt_wrong_call_lt_correct_call(answer, failed):
    scores = [total([FAILED_CALLS[failed]], answer), total([WRONG_CALL], answer), total([CORRECT_CALL], answer)]
    assert scores[0] < scores[1] < scores[2], scores


def test_format_cannot_reorder_the_classes():
    """Worst case for the ordering: the lower class parsed strictly (format 1.0), the higher one repaired (0.5)."""
    for answer in (RIGHT, WRONG_ANSWER):
        failed_strict = total([FAILED_CALLS["bad arguments"]], answer)
        wrong_strict, wrong_repaired = total([WRONG_CALL], answer), total([tool_call("381", strict=False)], answer)
        correct_repaired = total([tool_call("391", strict=False)], answer)
        assert failed_strict < wrong_repaired and wrong_strict < correct_repaired


def test_correct_call_beats_lucky_guess_without_tool():
    """The untrained model guesses; a right guess must not pay as much as computing it with the tool."""
    lucky_guess, with_tool = total([], RIGHT), total([CORRECT_CALL], RIGHT)
    assert lucky_guess >= 1.0  # still a right answer: outcome dominates
    assert with_tool > lucky_guess
    assert math.isclose(with_tool - lucky_guess, 0.3)


def test_right_answer_always_beats_wrong_answer():
    """Shaping stays below the outcome: the best wrong-answer episode scores under the worst right-answer one."""
    repaired = tool_call("391", strict=False)
    variants = [[], [WRONG_CALL], [CORRECT_CALL], [repaired], *[[f] for f in FAILED_CALLS.values()]]
    best_wrong = max(total(calls, WRONG_ANSWER) for calls in variants)
    worst_right = min(total(calls, RIGHT) for calls in variants)
    assert best_wrong < worst_right


def test_failed_call_costs_more_than_no_call():
    assert total([FAILED_CALLS["bad arguments"]], RIGHT) < total([], RIGHT)


def test_last_call_counts_not_best():
    assert tool_use(example_trajectory(calls=[CORRECT_CALL, WRONG_CALL], final_answer=RIGHT), TASK) == 0.1
    assert tool_use(example_trajectory(calls=[FAILED_CALLS["unparsable"], CORRECT_CALL], final_answer=RIGHT),
                    TASK) == 0.3


# ---- outcome ----


@pytest.mark.parametrize(
    ("answer", "expected"),
    [("391", 1.0), ("The answer is 391.", 1.0), (r"\boxed{391}", 1.0), ("391.0000001", 1.0), ("381", 0.0),
     ("I don't know", 0.0), ("", 0.0), ("391 or 392", 0.0)],
)
def test_outcome_uses_the_calculator_verifier(answer, expected):
    assert outcome(example_trajectory(final_answer=answer), TASK) == expected


@pytest.mark.parametrize("status", ["truncated", "error"])
def test_outcome_is_zero_without_finished_answer(status):
    assert outcome(example_trajectory(final_answer=None, status=status), TASK) == 0.0
    assert outcome(example_trajectory(final_answer=RIGHT, status=status), TASK) == 0.0  # cut: not an answer


def test_outcome_unknown_env_raises_and_combine_contains_it():
    task = dataclasses.replace(TASK, env="nope")
    with pytest.raises(LookupError, match="no verifier for env 'nope'"):
        outcome(example_trajectory(final_answer=RIGHT), task)
    value, parts = combine(example_trajectory(final_answer=RIGHT), task, RewardConfig())
    assert parts["outcome"] == 0.0 and parts["outcome_error"] == 1.0
    assert parts["format"] == 1.0 and "format_error" not in parts
    assert math.isclose(value, 0.1)


def test_outcome_bad_ground_truth_is_zero_not_an_error():
    task = dataclasses.replace(TASK, answer="not json")
    assert outcome(example_trajectory(final_answer=RIGHT), task) == 0.0


# ---- format ----


@pytest.mark.parametrize(
    ("calls", "answer", "status", "expected"),
    [
        ([], RIGHT, "finished", 1.0),
        ([CORRECT_CALL, WRONG_CALL], WRONG_ANSWER, "finished", 1.0),  # format does not judge correctness
        ([FAILED_CALLS["bad arguments"]], RIGHT, "finished", 1.0),  # parsed strictly; the arguments were wrong
        ([tool_call("391", strict=False)], RIGHT, "finished", 0.5),
        ([CORRECT_CALL, tool_call("391", strict=False)], RIGHT, "finished", 0.5),
        ([FAILED_CALLS["unparsable"], CORRECT_CALL], RIGHT, "finished", 0.25),
        ([CORRECT_CALL], None, "truncated", 0.0),
        ([], None, "error", 0.0),
        ([], "   ", "finished", 0.0),
        ([], None, "finished", 0.0),
    ],
)
def test_format_validity(calls, answer, status, expected):
    assert format_validity(example_trajectory(calls=calls, final_answer=answer, status=status), TASK) == expected


def test_format_counts_parse_errors_without_a_record():
    traj = example_trajectory(calls=[CORRECT_CALL], final_answer=RIGHT)
    traj.parse_errors = 1
    assert format_validity(traj, TASK) == 0.25


# ---- tool use ----


def test_classify_calls():
    calls = [FAILED_CALLS["unparsable"], FAILED_CALLS["tool error"], WRONG_CALL, CORRECT_CALL, tool_call("391.0")]
    traj = example_trajectory(calls=calls, final_answer=RIGHT)
    assert classify_calls(traj, TASK) == ["failed", "failed", "wrong", "correct", "correct"]


def test_tool_use_values_are_configurable():
    cfg = RewardConfig(tool_none=-0.05, tool_failed=-0.1, tool_wrong=0.0, tool_correct=0.2)
    assert total([], RIGHT, cfg) == pytest.approx(1.0 + 0.1 - 0.05)
    assert total([CORRECT_CALL], RIGHT, cfg) == pytest.approx(1.0 + 0.1 + 0.2)


def test_tool_use_on_odd_trajectories_does_not_raise():
    assert tool_use(example_trajectory(final_answer=None, status="error"), TASK) == 0.0
    assert tool_use(example_trajectory(calls=[CORRECT_CALL], final_answer=None, status="truncated"), TASK) == 0.3


def test_tool_use_unpairable_results_are_contained():
    traj = example_trajectory(calls=[CORRECT_CALL], final_answer=RIGHT)
    traj.messages = [m for m in traj.messages if m["role"] != "tool"]
    with pytest.raises(ValueError, match="cannot pair"):
        tool_use(traj, TASK)
    _, parts = combine(traj, TASK, RewardConfig())
    assert parts["tool_use"] == 0.0 and parts["tool_use_error"] == 1.0 and parts["outcome"] == 1.0


# ---- efficiency ----


def test_efficiency():
    two_turns = example_trajectory(calls=[CORRECT_CALL], final_answer=RIGHT)
    five_turns = example_trajectory(calls=[CORRECT_CALL] * 4, final_answer=RIGHT)
    assert efficiency(two_turns, TASK) == 0.0  # one call + one answer is free
    assert efficiency(five_turns, TASK) == pytest.approx(-0.15)
    assert efficiency(two_turns, TASK, per_turn=0.1, free_turns=1, per_token=0.01) == pytest.approx(-0.1 - 0.08)


def test_efficiency_is_off_by_default_in_the_total():
    assert total([CORRECT_CALL] * 4, RIGHT) == pytest.approx(total([CORRECT_CALL], RIGHT))
    cfg = RewardConfig(weights={"efficiency": 1.0})
    assert total([CORRECT_CALL] * 4, RIGHT, cfg) == pytest.approx(total([CORRECT_CALL], RIGHT, cfg) - 0.15)


# ---- combine and the config ----


def test_combine_weights_and_breakdown():
    cfg = RewardConfig(weights={"outcome": 2.0, "format": 0.5, "tool_use": 0.5, "efficiency": 1.0},
                       efficiency_per_turn=0.1)
    traj = example_trajectory(calls=[WRONG_CALL, CORRECT_CALL], final_answer=RIGHT)  # 3 turns: one over free
    value, parts = combine(traj, TASK, cfg)
    assert parts == pytest.approx({"outcome": 1.0, "format": 1.0, "tool_use": 0.3, "efficiency": -0.1,
                                   "total": value})
    assert value == pytest.approx(2.0 * 1.0 + 0.5 * 1.0 + 0.5 * 0.3 + 1.0 * -0.1)


def test_combine_weight_zero_still_logged():
    cfg = RewardConfig(weights={"format": 0.0})
    value, parts = combine(example_trajectory(calls=[CORRECT_CALL], final_answer=RIGHT), TASK, cfg)
    assert parts["format"] == 1.0 and value == pytest.approx(1.3)


def test_a_scorer_that_raises_is_contained(monkeypatch):
    def broken(trajectory, task):
        raise RuntimeError("scorer bug")

    monkeypatch.setitem(SCORERS, "format", broken)
    value, parts = combine(example_trajectory(calls=[CORRECT_CALL], final_answer=RIGHT), TASK, RewardConfig())
    assert parts["format"] == 0.0 and parts["format_error"] == 1.0
    assert value == pytest.approx(1.3) and parts["total"] == value


MODEL_BACKED = {"reward_model", "judge"}


def test_scorers_never_raise_on_odd_trajectories():
    odd = [
        example_trajectory(final_answer=None, status="error"),
        example_trajectory(final_answer=None, status="truncated"),
        example_trajectory(calls=[FAILED_CALLS["unparsable"]] * 3, final_answer=None, status="truncated"),
        example_trajectory(final_answer=""),
    ]
    for traj in odd:
        for name, scorer in SCORERS.items():
            if name in MODEL_BACKED:  # need a trained model or an engine: test_reward_model.py, test_judge.py
                continue
            assert math.isfinite(scorer(traj, TASK, **RewardConfig().params(name)))
        _, parts = combine(traj, TASK, RewardConfig())
        assert not [k for k in parts if k.endswith("_error")]


def test_default_config_is_valid_and_documented():
    from jobs.config_loader import undocumented

    cfg = RewardConfig()
    assert cfg.validate() == []
    assert cfg.weights == {"outcome": 1.0, "format": 0.1, "tool_use": 1.0, "efficiency": 0.0}
    assert undocumented(RewardConfig) == []
    assert cfg.shaping_span() == pytest.approx(0.6)


def test_partial_weights_keep_the_other_defaults():
    cfg = load_config(RewardConfig, overrides=["weights.format=0.2"])
    assert cfg.weights == {"outcome": 1.0, "format": 0.2, "tool_use": 1.0, "efficiency": 0.0}


def test_validate_reports_every_problem():
    with pytest.raises(ConfigError) as info:
        from_dict(RewardConfig, {"weights": {"outcome": -1.0, "formatt": 0.1, "tool_use": -0.5}})
    text = str(info.value)
    assert "weights.formatt: unknown scorer. Did you mean 'format'?" in text
    assert "weights.outcome: must be > 0" in text
    assert "weights.tool_use: must be >= 0" in text


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"tool_failed": 0.2, "tool_wrong": 0.1}, "tool_failed < tool_wrong < tool_correct"),
        ({"tool_correct": 0.9}, "shaping could outweigh a right answer"),
        ({"weights": {"tool_use": 2.0}}, "shaping could outweigh a right answer"),
        ({"efficiency_per_token": -0.01}, "efficiency_per_token: must be >= 0"),
        ({"tool_wrong": float("nan")}, "tool_wrong: must be a finite number"),
        ({"weights": {"format": float("inf")}}, "weights.format: must be a finite number"),
        ({"escalation_needless": 0.1}, "escalation_needless: must be <= 0"),
        ({"weights": {"escalation": 1.0}, "escalation_needless": -0.7}, "shaping could outweigh a right answer"),
    ],
)
def test_validate_problems(kwargs, needle):
    problems = RewardConfig(**kwargs).validate()
    assert any(needle in p for p in problems), problems
