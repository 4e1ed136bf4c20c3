from __future__ import annotations

import doctest

import pytest

from actors.trajectory import Trajectory
from jobs import transcripts
from jobs.transcripts import format_transcripts
from rewards._examples import example_trajectory, tool_call

pytestmark = pytest.mark.timeout(30)


def test_doctests():
    assert doctest.testmod(transcripts).failed == 0


def test_hand_off_prompt_kept_first_system_prompt_shortened_and_limit_counted():
    base = example_trajectory(calls=[tool_call("391")], final_answer="391")
    messages = [{"role": "system", "content": "You are triage.\n<tools>...</tools>"}, *base.messages[1:3],
                {"role": "system", "content": "You are billing.\nRefund orders."}, *base.messages[3:]]
    handed: Trajectory = Trajectory(**{**base.__dict__, "messages": messages})
    text = format_transcripts([handed, base, base], limit=2)
    assert "**system**: You are triage.\n" in text and "<tools>" not in text
    assert "**system**: You are billing.\nRefund orders." in text
    assert text.count("## t0") == 2 and "... and 1 more episodes" in text
