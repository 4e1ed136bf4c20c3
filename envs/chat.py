"""The one chat template of the project and the token bookkeeping around it.

Rollout, SFT, demonstration import, eval and serve all render episodes through ``render`` so that the tokens a
policy is trained on are the tokens it is served with. The runner never re-tokenizes earlier turns: it renders the
grown message list and tokenizes only the new suffix (``suffix_ids``), which is exact because every turn boundary is
a special token (``<|im_start|>`` / ``<|im_end|>``) that the tokenizer never merges across.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

TEMPLATE_PATH = Path(__file__).with_name("chat_template.jinja")
CHAT_TEMPLATE = TEMPLATE_PATH.read_text()
END_OF_TURN = "<|im_end|>"
TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"
# The rollout stop string: the closing tag without its ``>``, which the runner writes itself (mask 0). The tag is
# several tokens in most vocabularies, and a stop string ends a turn inside the token that completes it: with the
# whole tag, the policy's last choice is ``>`` against ``>"``, ``>.``, ..., a choice no reward is about, and RL
# drifted onto ``>"`` and from there into ``}}"``, calls that no longer parse (docs/training.md, "A format drift").
TOOL_CALL_STOP = TOOL_CALL_CLOSE[:-1]


def _tojson(value: Any, indent: int | None = None) -> str:
    # Same behaviour as transformers' chat-template `tojson`, so HF/vLLM rendering of this template is identical.
    return json.dumps(value, ensure_ascii=False, indent=indent)


@lru_cache(maxsize=1)
def _template() -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = _tojson
    return env.from_string(CHAT_TEMPLATE)


def render(messages: Sequence[dict], *, tools: Sequence[dict] | None = None,
           add_generation_prompt: bool = False) -> str:
    """Render a message list (roles system/user/assistant/tool; system messages may carry ``tools``) to text."""
    return _template().render(messages=list(messages), tools=list(tools) if tools else None,
                              add_generation_prompt=add_generation_prompt)


def suffix_ids(tokenizer, before: str, after: str) -> list[int]:
    """Token ids of ``after[len(before):]``; ``before`` must be a prefix of ``after`` (checked: it is the contract)."""
    if not after.startswith(before):
        raise ValueError("chat contract broken: the rendered episode no longer starts with its earlier rendering; "
                         f"diverges after {_common_prefix(before, after)} chars")
    return tokenizer.encode(after[len(before):], add_special_tokens=False)


def decode(tokenizer, ids: Sequence[int]) -> str:
    """Decode exactly (special tokens kept, no whitespace clean-up), so decode(encode(text)) == text."""
    return tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


def format_tool_call(name: str, arguments: dict) -> str:
    """The canonical text of one call, as demonstrations and serve write it."""
    return f"{TOOL_CALL_OPEN}\n{_tojson({'name': name, 'arguments': arguments})}\n{TOOL_CALL_CLOSE}"


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
