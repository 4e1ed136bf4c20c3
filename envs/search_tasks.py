"""Search tasks and their scripted expert: hand-written questions on the shipped corpus, split by page.

Each question (``envs/search_corpus/questions.jsonl``: ``doc_id``, ``question``, ``answer``) asks for one specific
fact on one page, and its answer is a list of groups of accepted spellings (``[["0.02"]]``; ``[["torchvision"],
["torchaudio"], ["torchcodec"]]`` needs all three). A task's prompt is its question, sometimes inside a short
framing ("Quick question about agentrl: ..."); ``meta`` holds ``doc_id`` (the gold page, which
``rewards.grounding`` checks was retrieved), ``question``, ``split``, ``difficulty`` (1: the top passage for the
question states the answer; 2: it does not) and, where the row gives one, ``evidence``: a phrase of the sentence
that states the answer, which tells the expert which of two sentences to quote.

Splits are by page: a page hashes to one split, and all its questions go with it, so no fact asked in val or test is
ever a training answer. The corpus is small (40 pages, 137 questions), so the split buckets are 70 / 15 / 15 rather
than the other envs' 80 / 10 / 10: that gives 25 / 9 / 6 pages. The number of distinct tasks of a split is its
questions times the framings; asking for more raises ValueError with the count.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from functools import lru_cache
from pathlib import Path

from envs.answer_env import expert_transcript
from envs.chat import format_tool_call
from envs.search_env import CORPUS_DIR, MAX_K, SearchEnv, answer_groups, contains_fact, load_corpus
from envs.tasks import Task
from envs.tool_calls import ToolCall

__all__ = ["SPLITS", "FRAMINGS", "load_questions", "split_of", "generate_tasks", "scripted_expert", "transcript"]

QUESTIONS_PATH = CORPUS_DIR / "questions.jsonl"
SPLITS = {"train": range(0, 70), "val": range(70, 85), "test": range(85, 100)}
FRAMINGS = ("{q}", "Using the agentrl docs: {q}", "Quick question about agentrl: {q}", "I'm setting up agentrl. {q}",
            "According to the agentrl documentation, {lq}", "Look this up in the docs please. {q}")

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`(\"$])")


@lru_cache(maxsize=2)
def load_questions(path: str | Path = QUESTIONS_PATH) -> tuple[dict, ...]:
    """The question rows, checked against the corpus: the page exists and holds every group's first spelling."""
    corpus = load_corpus()
    rows, problems = [], []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        doc = corpus.documents.get(row.get("doc_id"))
        if doc is None:
            problems.append(f"line {n}: unknown doc_id {row.get('doc_id')!r}")
        elif not all(contains_fact(doc.text, group[0]) for group in row["answer"]):
            problems.append(f"line {n}: page {doc.id!r} does not contain the answer {row['answer']}")
        rows.append(row)
    if problems:
        raise ValueError(f"{path}: {len(problems)} problem(s): {'; '.join(problems)}. Fix: make every answer's "
                         "first spelling appear verbatim on its page")
    return tuple(rows)


def split_of(doc_id: str) -> str:
    """The split of a page (and so of all its questions), by a hash of its id: stable as the corpus grows."""
    bucket = int.from_bytes(hashlib.sha256(f"search-doc:{doc_id}".encode()).digest()[:8], "big") % 100
    return next(name for name, buckets in SPLITS.items() if bucket in buckets)


def generate_tasks(n: int, seed: int, split: str = "train") -> list[Task]:
    """``n`` distinct search tasks, the same for the same (n, seed, split); splits never share a page.

    Every question of the split is used once before any is asked again in another framing.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    questions = [q for q in load_questions() if split_of(q["doc_id"]) == split]
    if n > len(questions) * len(FRAMINGS):
        raise ValueError(f"could only generate {len(questions) * len(FRAMINGS)} distinct {split} tasks of {n} "
                         f"requested ({len(questions)} questions x {len(FRAMINGS)} framings)")
    rng = random.Random(f"search:{split}:{seed}")  # str seeds hash with sha512: stable across processes
    framings = {q["question"]: rng.sample(range(len(FRAMINGS)), len(FRAMINGS)) for q in questions}
    tasks: list[Task] = []
    for round_ in range(len(FRAMINGS)):
        for q in rng.sample(questions, len(questions)):
            if len(tasks) == n:
                return tasks
            framing = FRAMINGS[framings[q["question"]][round_]]
            question = q["question"]
            prompt = framing.format(q=question, lq=question[0].lower() + question[1:])
            meta = {"split": split, "doc_id": q["doc_id"], "question": question, "framing": framing,
                    "difficulty": 1 if _first_passage_answers(question, q) else 2}
            if q.get("evidence"):
                meta["evidence"] = q["evidence"]
            tasks.append(Task(task_id=f"search-{split}-{seed}-{len(tasks)}", env="search", prompt=prompt,
                              answer=json.dumps(q["answer"]), meta=json.dumps(meta)))
    return tasks


def _first_passage_answers(question: str, row: dict) -> bool:
    """Difficulty 1: the top passage for the question is on the gold page and states the answer."""
    hits = load_corpus().search(question, 1)
    return bool(hits) and hits[0][0].doc_id == row["doc_id"] and all(
        contains_fact(hits[0][0].text, group[0]) for group in row["answer"])


# ---- the scripted expert ----


def scripted_expert(task: Task) -> list[dict]:
    """The messages an expert adds after the prompt, played through a fresh env (so every tool message is the env's
    own observation): ``search`` with the question; if the gold page is not among the 3 passages, search again with
    ``k`` = 10; ``open`` the gold page when its passages shown do not state the fact; then one sentence quoting the
    page, with its id in brackets.
    """
    meta = task.meta_value()
    doc_id, question = meta.get("doc_id"), meta.get("question")
    if not isinstance(doc_id, str) or not isinstance(question, str):
        raise ValueError(f"task {task.task_id!r} has no meta.doc_id / meta.question: scripted_expert needs them to "
                         "search and to know which page answers")
    env = SearchEnv()
    env.reset(task)
    canonical = [group[0] for group in answer_groups(task)]
    steps: list[dict] = []

    def call(name: str, arguments: dict) -> str:
        observation = env.step(ToolCall(name, arguments, raw="", strict=True)).observation or ""
        steps.extend([{"role": "assistant", "content": format_tool_call(name, arguments)},
                      {"role": "tool", "name": name, "content": observation}])
        return observation

    query = question.rstrip("?").strip()
    seen = call("search", {"query": query})
    if f"[{doc_id}]" not in seen:
        seen = call("search", {"query": query, "k": MAX_K})
    if f"[{doc_id}]" not in seen:
        raise ValueError(f"task {task.task_id!r}: page {doc_id!r} is not in the top {MAX_K} passages for its "
                         "question. Fix: reword the question with the page's own words")
    sentence = _answer_sentence(env.corpus.documents[doc_id].paragraphs, canonical, question, meta.get("evidence"))
    if not _shows(seen, doc_id, sentence):
        call("open", {"doc_id": doc_id})
    return [*steps, {"role": "assistant", "content": f"{sentence} [{doc_id}]"}]


def _answer_sentence(paragraphs: tuple[str, ...], canonical: list[str], question: str, evidence: str | None) -> str:
    """The page's sentence that states every canonical spelling (and contains ``evidence``, when the question row
    names it to pick between sentences); of several, the one sharing most question words."""
    words = set(re.findall(r"[a-z0-9_]+", question.lower()))
    candidates = [s for p in paragraphs for s in _SENTENCE_END.split(p)
                  if all(contains_fact(s, c) for c in canonical) and (not evidence or evidence in s)]
    if not candidates:
        raise ValueError(f"no single sentence states {canonical}. Fix: write the fact in one sentence on its page")
    return max(candidates, key=lambda s: len(words & set(re.findall(r"[a-z0-9_]+", s.lower()))))


def _shows(observation: str, doc_id: str, sentence: str) -> bool:
    """Did a passage of ``doc_id`` in the search results show ``sentence``?"""
    blocks = observation.split("\n\n")
    return any(b.startswith(f"[{doc_id}]") and sentence in b for b in blocks)


def transcript(task: Task) -> str:
    """The scripted expert's episode played through a fresh env, as text; every tool line is the env's observation.

    >>> t = Task("t", "search", "Which Python version does agentrl require?", '[["3.11"]]',
    ...          '{"doc_id": "install-cpu", "question": "Which Python version does agentrl require?"}')
    >>> print(transcript(t))  # doctest: +ELLIPSIS
    user: Which Python version does agentrl require?
    assistant: <tool_call>
    {"name": "search", "arguments": {"query": "Which Python version does agentrl require"}}
    </tool_call>
    tool: [install-cpu] Installing agentrl on a CPU machine (passage 1 of 3)
    agentrl needs Python version 3.11: the package declares ...
    assistant: agentrl needs Python version 3.11: the package declares `requires-python = ">=3.11,<3.12"`. [install-cpu]
    (reward 1.0)
    """
    return expert_transcript(SearchEnv(), task, scripted_expert(task))


if __name__ == "__main__":  # sample transcripts, one easy and one hard: python -m envs.search_tasks
    shown: set[int] = set()
    for t in generate_tasks(40, seed=0):
        level = t.meta_value()["difficulty"]
        if level not in shown:
            shown.add(level)
            print(f"## difficulty {level} ({t.task_id}; gold page {t.meta_value()['doc_id']}; answer {t.answer})\n"
                  f"{transcript(t)}\n")
