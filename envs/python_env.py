"""The python environment: program-aided questions a 135M model cannot answer in its head, and a tool to run code.

The tool runs the model's program in a fresh sandboxed process (``envs.sandbox``: rlimits, an audit hook, a temp
dir, a wall-clock kill) and returns what it printed. The tasks (sums of long lists, the k-th smallest element,
counting primes, digit sums of big powers, Fibonacci numbers mod m, sums of multiples) each take a short program
and have an integer answer.
"""

from __future__ import annotations

import hashlib
import json
import math
import random

from envs.answer_env import AnswerEnv
from envs.base import Tool, ToolError
from envs.calculator import SPLITS, extract_number
from envs.chat import format_tool_call
from envs.sandbox import run_python
from envs.tasks import Task

__all__ = ["PythonEnv", "run_code", "PYTHON_TOOL", "SYSTEM_PROMPT", "generate_tasks", "verify", "scripted_expert",
           "KINDS"]

CPU_S = 2.0  # CPU seconds per program; every task's reference program takes < 0.1 s
MEMORY_MB = 256  # address space per program; the tasks need a few MB, Python itself ~20
MAX_OUTPUT_CHARS = 2000  # the observation goes into the context of a small model: a longer print is a mistake
WALL_S = 4.0  # below the runner's default tool_timeout_s (5 s), so the model sees the sandbox's own message

_NO_OUTPUT = "(no output: the program printed nothing; print() the result to see it)"


def run_code(code: str) -> str:
    """Run ``code`` in the sandbox and return what it printed; ToolError with the error line when it failed.

    >>> run_code("numbers = [3, 1, 2]\\nprint(sorted(numbers)[1])")
    '2'
    >>> run_code("x = 1")
    '(no output: the program printed nothing; print() the result to see it)'
    """
    result = run_python(code, cpu_s=CPU_S, memory_mb=MEMORY_MB, max_output_chars=MAX_OUTPUT_CHARS, wall_s=WALL_S)
    out = result.stdout.rstrip()
    if result.truncated:
        out += f"\n... (output cut at {MAX_OUTPUT_CHARS} characters; print only the result)"
    if not result.ok:
        raise ToolError(result.error + (f"\noutput before the error:\n{out}" if out else ""))
    return out or _NO_OUTPUT


PYTHON_TOOL = Tool(
    name="python",
    description="Run a short Python 3 program in a fresh sandbox and return what it prints. Only printed output "
    "comes back, so print the result. Standard library only; no network, no files outside the working "
    f"directory; limits: {CPU_S:g} s of CPU time and {MEMORY_MB} MB of memory. "
    'Example: {"code": "numbers = [12, 7, 30]\\nprint(sum(numbers))"}.',
    parameters={
        "type": "object",
        "properties": {"code": {"type": "string", "description": "the program to run; end it with print(result)"}},
        "required": ["code"],
        "additionalProperties": False,
    },
    fn=run_code,
)

SYSTEM_PROMPT = (
    "You are a careful assistant. For any counting or calculation, write a short Python program and run it with "
    "the python tool instead of working it out in your head; print() the result, since only printed output comes "
    "back. When you have the result, give the final answer as a plain sentence ending with the number."
)


# ---- verifier ----


def verify(task: Task, final_answer: str) -> bool:
    """True iff the last number in the final answer equals the task's answer: exactly for an integer answer (every
    generated task), within a relative 1e-6 otherwise. Exact, unlike the calculator's tolerance, because answers
    here reach 1e9, where a relative 1e-6 would accept an off-by-one count.
    """
    try:
        expected = task.answer_value()
        exact = isinstance(expected, int) and not isinstance(expected, bool)
        expected = float(expected)
    except (ValueError, TypeError, OverflowError):
        return False
    got = extract_number(final_answer)
    if got is None:
        return False
    return got == expected if exact else math.isclose(got, expected, rel_tol=1e-6, abs_tol=1e-9)


# ---- the environment ----


class PythonEnv(AnswerEnv):
    """One episode at a time: the model may run any number of programs, then answers in text."""

    name = "python"
    system_prompt = SYSTEM_PROMPT

    def __init__(self) -> None:
        super().__init__([PYTHON_TOOL])

    def verify(self, task: Task, answer: str) -> bool:
        return verify(task, answer)


def scripted_expert(task: Task) -> list[dict]:
    """The messages an expert would add after the prompt: one python call, its output, the answer (for SFT).

    The reference program prints exactly the answer, so the tool message is the answer itself, without spawning a
    process per demonstration; the tests run every call through the env and check the env returns that text.
    """
    program = task.meta_value().get("program")
    if not isinstance(program, str):
        raise ValueError(f"task {task.task_id!r} has no meta.program: scripted_expert needs it to call the tool")
    answer = task.answer_value()
    return [
        {"role": "assistant", "content": format_tool_call(PYTHON_TOOL.name, {"code": program})},
        {"role": "tool", "name": PYTHON_TOOL.name, "content": str(answer)},
        {"role": "assistant", "content": f"The answer is {answer}."},
    ]


# ---- task generation ----

# Each problem (its kind and parameters, the "key") belongs to exactly one split by its hash, so held-out tasks are
# never trained on, whatever the seeds; the calculator's SPLITS: train 80% of the problem space, val and test 10%.


def _split_of(key: str) -> str:
    bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 100
    return next(name for name, buckets in SPLITS.items() if bucket in buckets)


def _ordinal(k: int) -> str:
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


# Sizes keep every scripted call under ~110 tokens (SmolLM2 tokenizer), inside the rollout's 128-token turn.
# Each sampler returns (key, prompt, program, answer, difficulty). The answer is computed here without the program
# (by another method where there is one), so the tests' run of the program through the sandbox checks both.


def _sum(rng: random.Random) -> tuple[str, str, str, int, int]:
    numbers = [rng.randint(10, 9999) for _ in range(rng.randint(8, 12))]
    shown = ", ".join(map(str, numbers))
    prompt = rng.choice([f"What is the sum of these numbers: {shown}?", f"Add up the following numbers: {shown}.",
                         f"A shop's sales this month were {shown}. What were its total sales?"])
    return f"sum:{shown}", prompt, f"numbers = [{shown}]\nprint(sum(numbers))", sum(numbers), 1


def _kth(rng: random.Random) -> tuple[str, str, str, int, int]:
    numbers = rng.sample(range(10, 1000), rng.randint(8, 12))
    shown, k, largest = ", ".join(map(str, numbers)), rng.randint(2, 6), rng.random() < 0.5
    order = "largest" if largest else "smallest"
    prompt = rng.choice([f"What is the {_ordinal(k)} {order} number in this list: {shown}?",
                         f"Sort these numbers from {order} to {'smallest' if largest else 'largest'}: {shown}. "
                         f"Which number comes {_ordinal(k)}?"])
    program = f"numbers = [{shown}]\nprint(sorted(numbers{', reverse=True' if largest else ''})[{k - 1}])"
    answer = sorted(numbers, reverse=largest)[k - 1]
    return f"kth:{order}:{k}:{shown}", prompt, program, answer, 1


def _digit_sum(rng: random.Random) -> tuple[str, str, str, int, int]:
    a, b = rng.randint(2, 99), rng.randint(50, 400)
    prompt = rng.choice([f"What is the sum of the digits of {a}**{b}?",
                         f"Compute {a} to the power {b} and add up its decimal digits. What is the total?"])
    answer = sum(map(int, str(a**b)))
    return f"digits:{a}**{b}", prompt, f"print(sum(int(d) for d in str({a} ** {b})))", answer, 2


def _multiples(rng: random.Random) -> tuple[str, str, str, int, int]:
    a, b = sorted(rng.sample(range(2, 14), 2))
    n = rng.randint(100, 100_000)
    prompt = rng.choice([f"What is the sum of all positive integers below {n} that are multiples of {a} or {b}?",
                         f"Add up every whole number from 1 to {n - 1} that is divisible by {a} or by {b}."])
    program = f"print(sum(x for x in range(1, {n}) if x % {a} == 0 or x % {b} == 0))"

    def below(k: int) -> int:  # sum of the multiples of k below n
        m = (n - 1) // k
        return k * m * (m + 1) // 2

    answer = below(a) + below(b) - below(a * b // math.gcd(a, b))  # inclusion-exclusion, not the program's loop
    return f"multiples:{a},{b}:{n}", prompt, program, answer, 2


def _primes(rng: random.Random) -> tuple[str, str, str, int, int]:
    n = rng.randint(1000, 50_000)
    prompt = rng.choice([f"How many prime numbers are there below {n}?", f"Count the primes less than {n}."])
    program = (f"n = {n}\nis_prime = [True] * n\nfor i in range(2, n):\n    if is_prime[i]:\n"
               "        is_prime[i * i::i] = [False] * len(is_prime[i * i::i])\nprint(sum(is_prime[2:]))")
    sieve = bytearray([1]) * n  # a bytes sieve, not the program's list: the tests' run cross-checks the two
    sieve[:2] = b"\0\0"
    for i in range(2, math.isqrt(n - 1) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytes(len(range(i * i, n, i)))
    return f"primes:{n}", prompt, program, sum(sieve), 3


def _fibonacci(rng: random.Random) -> tuple[str, str, str, int, int]:
    n, m = rng.randint(30, 3000), rng.choice([97, 100, 1000, 9973, 10_000, 1_000_007])  # no tiny m: guessable
    prompt = rng.choice([f"Let F(0) = 0, F(1) = 1 and F(k) = F(k-1) + F(k-2). What is F({n}) mod {m}?",
                         f"What is the remainder when the {_ordinal(n)} Fibonacci number is divided by {m}? "
                         "(F(0) = 0, F(1) = 1)"])
    program = f"a, b = 0, 1\nfor _ in range({n}):\n    a, b = b, (a + b) % {m}\nprint(a)"
    a, b = 0, 1
    for _ in range(n):  # exact big integers, reduced once at the end
        a, b = b, a + b
    return f"fib:{n}:{m}", prompt, program, a % m, 3


KINDS = {"sum": _sum, "kth": _kth, "digit_sum": _digit_sum, "multiples": _multiples, "primes": _primes,
         "fibonacci": _fibonacci}


def generate_tasks(n: int, seed: int, split: str = "train") -> list[Task]:
    """``n`` distinct python tasks, the same for the same (n, seed, split); splits never share a problem."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    rng = random.Random(f"python:{split}:{seed}")  # str seeds hash with sha512: stable across processes
    tasks: list[Task] = []
    seen: set[str] = set()
    for _ in range(50 * n + 100):
        if len(tasks) == n:
            break
        kind = rng.choice(sorted(KINDS))
        key, prompt, program, answer, difficulty = KINDS[kind](rng)
        if key in seen or _split_of(key) != split:
            continue
        seen.add(key)
        meta = {"split": split, "difficulty": difficulty, "kind": kind, "program": program}
        tasks.append(
            Task(
                task_id=f"py-{split}-{seed}-{len(tasks)}",
                env="python",
                prompt=prompt,
                answer=json.dumps(answer),
                meta=json.dumps(meta),
            )
        )
    if len(tasks) < n:
        raise ValueError(f"could only generate {len(tasks)} distinct {split} tasks of {n} requested")
    return tasks
