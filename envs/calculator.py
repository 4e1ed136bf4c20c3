"""The calculator environment: arithmetic a 135M model gets wrong without a tool, and a safe tool to do it.

The tool walks the ``ast`` of the expression (no ``eval``) and caps lengths, exponents and magnitudes, so a
policy exploring at temperature 1 cannot hang or escape the rollout worker with it.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import operator
import random
import re
from collections.abc import Callable

from envs.answer_env import AnswerEnv
from envs.base import Tool, ToolError
from envs.tasks import Task

__all__ = [
    "CalculatorEnv",
    "calculate",
    "CALCULATOR_TOOL",
    "SYSTEM_PROMPT",
    "generate_tasks",
    "verify",
    "scripted_expert",
    "SPLITS",
]

MAX_EXPRESSION_CHARS = 500  # longer than any real arithmetic question; bounds parse time
MAX_EXPONENT = 100  # |exponent| in **; with MAX_MAGNITUDE operands this keeps every power cheap
MAX_MAGNITUDE = 1e30  # every intermediate result; far beyond the tasks, small enough to stay exact-ish and fast

_BINARY: dict[type, Callable] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_FUNCTIONS = {"sqrt": 1, "abs": 1, "round": 2}  # name -> most positional arguments
_UNICODE_OPS = {"\u00d7": "*", "\u00f7": "/", "\u2212": "-", "\u2013": "-"}  # multiplication, division, minus, dash


def calculate(expression: str) -> str:
    """Evaluate arithmetic safely and format it: ints as ints, floats to 6 decimals without trailing zeros.

    >>> calculate("17*23"), calculate("25 / 2"), calculate("1/3"), calculate("sqrt(16) + 2**3")
    ('391', '12.5', '0.333333', '12')
    """
    if not isinstance(expression, str):
        raise ToolError(f"expression must be a string, got {type(expression).__name__}")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"expression too long ({len(expression)} chars; at most {MAX_EXPRESSION_CHARS})")
    text = expression
    for symbol, op in _UNICODE_OPS.items():
        text = text.replace(symbol, op)
    text = text.strip().rstrip("=").strip()  # "17*23 =" is a common, harmless slip
    if not text:
        raise ToolError("empty expression; write arithmetic such as 17 * 23")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        raise ToolError(f"invalid expression: {e.msg}") from None
    except ValueError as e:  # e.g. null bytes
        raise ToolError(f"invalid expression: {e}") from None
    try:
        value = _eval(tree.body)
    except RecursionError:
        raise ToolError("expression nested too deeply") from None
    return _format(value)


def _eval(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise ToolError(f"unsupported constant {node.value!r}; only numbers are allowed")
        return _checked(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        value = _eval(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ToolError(f"exponent {_format(right)} too large (at most {MAX_EXPONENT} in absolute value)")
        try:
            value = _BINARY[type(node.op)](left, right)
        except ZeroDivisionError:
            raise ToolError("division by zero") from None
        except OverflowError:
            raise ToolError(f"result too large (at most {MAX_MAGNITUDE:g} in absolute value)") from None
        if isinstance(value, complex):
            raise ToolError("result is not a real number (fractional power of a negative number)")
        return _checked(value)
    if isinstance(node, ast.Call):
        return _call(node)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitXor):
        raise ToolError("'^' is not supported; use ** for powers")
    if isinstance(node, ast.Name):
        raise ToolError(
            f"unknown name {node.id!r}; only numbers, + - * / // % **, parentheses and "
            f"{', '.join(_FUNCTIONS)} are allowed"
        )
    if isinstance(node, ast.Attribute):
        raise ToolError(f"attribute access (.{node.attr}) is not allowed")
    if isinstance(node, ast.Tuple):
        raise ToolError("unsupported construct: tuple (write numbers without thousands separators, e.g. 1234)")
    raise ToolError(f"unsupported construct: {type(node).__name__}; only arithmetic is allowed")


def _call(node: ast.Call) -> int | float:
    if not isinstance(node.func, ast.Name):
        _eval(node.func)  # raises the precise reason: attribute access, a call of a call, ...
        raise ToolError("only sqrt, abs and round may be called")
    name = node.func.id
    if name not in _FUNCTIONS:
        raise ToolError(f"unknown function {name[:40]!r}; allowed: {', '.join(_FUNCTIONS)}")
    if node.keywords or not 1 <= len(node.args) <= _FUNCTIONS[name]:
        raise ToolError(f"{name}() takes {'1 or 2' if _FUNCTIONS[name] == 2 else '1'} positional argument(s)")
    args = [_eval(a) for a in node.args]
    if name == "sqrt":
        if args[0] < 0:
            raise ToolError("sqrt of a negative number")
        return _checked(math.sqrt(args[0]))
    if name == "abs":
        return abs(args[0])
    if len(args) == 2 and (not float(args[1]).is_integer() or abs(args[1]) > 15):
        raise ToolError("round(x, n): n must be a whole number between -15 and 15")
    return _checked(round(args[0], int(args[1])) if len(args) == 2 else round(args[0]))


def _checked(value: int | float) -> int | float:
    if isinstance(value, float) and math.isnan(value):
        raise ToolError("result is not a number")
    if abs(value) > MAX_MAGNITUDE:
        raise ToolError(f"result too large (at most {MAX_MAGNITUDE:g} in absolute value)")
    return value


def _format(value: int | float) -> str:
    if isinstance(value, int):
        return str(value)
    rounded = round(value, 6)
    if rounded == 0:
        return "0"  # also turns -0.0 into 0
    if rounded.is_integer() and abs(rounded) < 1e16:
        return str(int(rounded))
    if abs(rounded) >= 1e16:
        return f"{value:.15g}"
    return f"{rounded:.6f}".rstrip("0").rstrip(".")


CALCULATOR_TOOL = Tool(
    name="calculator",
    description="Evaluate an arithmetic expression exactly. Supports + - * / // % **, parentheses, "
    'sqrt(x), abs(x) and round(x, n). Example: {"expression": "(347 + 589) * 12"}.',
    parameters={
        "type": "object",
        "properties": {"expression": {"type": "string", "description": "the arithmetic to evaluate, e.g. 17 * 23"}},
        "required": ["expression"],
        "additionalProperties": False,
    },
    fn=calculate,
)

SYSTEM_PROMPT = (
    "You are a careful assistant. For any arithmetic, use the calculator tool instead of computing in your head. "
    "When you have the result, give the final answer as a plain sentence ending with the number."
)


# ---- verifier ----

_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][+-]?\d+)?|-?\.\d+")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_ANSWER = re.compile(r"answer\s*(?:is)?\s*[:=]", re.IGNORECASE)


def extract_number(text: str) -> float | None:
    """The last number in ``text`` (inside the last \\boxed{} or after "Answer:" when present), or None.

    >>> extract_number("347 * 29 = 10,063."), extract_number(r"so \\boxed{-12.5} it is, step 2")
    (10063.0, -12.5)
    """
    if not isinstance(text, str):
        return None
    text = text.replace("\u2212", "-")  # the Unicode minus sign
    boxed = _BOXED.findall(text)
    candidates = [boxed[-1]] if boxed else []
    marks = list(_ANSWER.finditer(text))
    if marks:
        candidates.append(text[marks[-1].end() :])
    candidates.append(text)
    for region in candidates:
        found = _NUMBER.findall(region)
        if found:
            try:
                return float(found[-1].replace(",", ""))
            except (ValueError, OverflowError):
                return None
    return None


def verify(task: Task, final_answer: str) -> bool:
    """True iff the last number in the final answer equals the task's answer (relative tolerance 1e-6)."""
    try:
        expected = task.answer_value()
        expected = float(expected)
    except (ValueError, TypeError, OverflowError):
        return False
    got = extract_number(final_answer)
    return got is not None and math.isclose(got, expected, rel_tol=1e-6, abs_tol=1e-9)


# ---- the environment ----


class CalculatorEnv(AnswerEnv):
    """One episode at a time: the model may call the calculator any number of times, then answers in text."""

    name = "calculator"
    system_prompt = SYSTEM_PROMPT

    def __init__(self) -> None:
        super().__init__([CALCULATOR_TOOL])

    def verify(self, task: Task, answer: str) -> bool:
        return verify(task, answer)


def scripted_expert(task: Task) -> list[dict]:
    """The messages an expert would add after the prompt: one calculator call, its result, the answer (for SFT)."""
    expression = task.meta_value().get("expression")
    if not isinstance(expression, str):
        raise ValueError(f"task {task.task_id!r} has no meta.expression: scripted_expert needs it to call the tool")
    result = calculate(expression)
    call = json.dumps({"name": CALCULATOR_TOOL.name, "arguments": {"expression": expression}})
    return [
        {"role": "assistant", "content": f"<tool_call>\n{call}\n</tool_call>"},
        {"role": "tool", "name": CALCULATOR_TOOL.name, "content": result},
        {"role": "assistant", "content": f"{expression} = {result}."},
    ]


# ---- task generation ----

# Each expression belongs to exactly one split (by its hash), so held-out tasks are never trained on,
# whatever the seeds: train gets 80% of the expression space, val and test 10% each.
SPLITS = {"train": range(0, 80), "val": range(80, 90), "test": range(90, 100)}

_QUESTIONS = [
    "What is {e}?",
    "Compute {e}.",
    "Calculate {e}.",
    "What does {e} equal?",
    "Evaluate {e}.",
    "Please work out {e}.",
    "What is the value of {e}?",
]


def _split_of(expression: str) -> str:
    bucket = int.from_bytes(hashlib.sha256(expression.encode()).digest()[:8], "big") % 100
    return next(name for name, buckets in SPLITS.items() if bucket in buckets)


def _sample(rng: random.Random) -> tuple[str, str, int]:
    """One (expression, prompt, difficulty); every number is exact and every answer an integer."""
    r = rng.randint
    kind = rng.choice(["mul", "mul", "add", "mixed", "div", "word", "word"])
    if kind == "mul":
        a, b = r(10, 999), r(11, 99) if rng.random() < 0.7 else r(100, 999)
        e = f"{a} * {b}"
        q = rng.choice([*_QUESTIONS, "What is {a} times {b}?", "Multiply {a} by {b}."])
        return e, q.format(e=e, a=a, b=b), 1 + (a >= 100) + (b >= 100)
    if kind == "add":
        a, b, c = r(100, 9999), r(100, 9999), r(100, 9999)
        e = rng.choice([f"{a} + {b}", f"{a} - {b}", f"{a} + {b} - {c}", f"{a} + {b} + {c}"])
        return e, rng.choice(_QUESTIONS).format(e=e), 1 + e.count(" ") // 4
    if kind == "mixed":
        a, b, c = r(100, 999), r(100, 999), r(3, 99)
        e = rng.choice([f"({a} + {b}) * {c}", f"({a} - {b}) * {c}", f"{a} * {c} + {b}", f"{a} * {c} - {b}"])
        return e, rng.choice(_QUESTIONS).format(e=e), 3
    if kind == "div":
        q, d = r(12, 999), r(3, 99)
        e = f"{q * d} / {d}"
        return e, rng.choice([*_QUESTIONS, "What is {n} divided by {d}?"]).format(e=e, n=q * d, d=d), 2
    return _word(rng)


def _word(rng: random.Random) -> tuple[str, str, int]:
    a, b, c = rng.randint(12, 99), rng.randint(12, 99), rng.randint(100, 999)
    templates = [
        (f"{a} * {b}", f"A shop sells {a} boxes of {b} pencils each. How many pencils is that in total?"),
        (f"{a} * {b}", f"A train travels at {a} km per hour for {b} hours. How many kilometres does it travel?"),
        (f"{c} * {a}", f"Tickets cost {c} dollars each. How many dollars do {a} tickets cost?"),
        (
            f"{c} + {a} * {b}",
            f"A library has {c} books and buys {a} boxes of {b} books each. How many books does it have now?",
        ),
        (f"{a * b} / {b}", f"{a * b} apples are shared equally among {b} baskets. How many apples go in each basket?"),
        (
            f"{c} * {b} - {a}",
            f"A farm packs {c} eggs a day for {b} days, then {a} eggs break. How many unbroken eggs are left?",
        ),
    ]
    e, prompt = rng.choice(templates)
    return e, prompt, 2


def generate_tasks(n: int, seed: int, split: str = "train") -> list[Task]:
    """``n`` distinct calculator tasks, the same for the same (n, seed, split); splits never share an expression."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    rng = random.Random(f"calculator:{split}:{seed}")  # str seeds hash with sha512: stable across processes
    tasks: list[Task] = []
    seen: set[str] = set()
    for _ in range(50 * n + 100):
        if len(tasks) == n:
            break
        expression, prompt, difficulty = _sample(rng)
        if expression in seen or _split_of(expression) != split:
            continue
        seen.add(expression)
        answer = calculate(expression)
        meta = {"split": split, "difficulty": difficulty, "expression": expression}
        tasks.append(
            Task(
                task_id=f"calc-{split}-{seed}-{len(tasks)}",
                env="calculator",
                prompt=prompt,
                answer=json.dumps(int(answer)),
                meta=json.dumps(meta),
            )
        )
    if len(tasks) < n:
        raise ValueError(f"could only generate {len(tasks)} distinct {split} tasks of {n} requested")
    return tasks
