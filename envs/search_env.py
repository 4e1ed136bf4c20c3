"""The search environment: questions about agentrl answered from a small document corpus that ships with the project.

The corpus (``envs/search_corpus/docs/*.md``, one page per file, ``# Title`` first) is this env's world: every
answer is a specific fact on one page (an option's default, a file name, a measured number), so it has to be
retrieved, not guessed. Two tools: ``search`` ranks the corpus's passages (a page's paragraphs) with BM25 and shows
the top ones with their page ids in brackets, ``[lora-sync]``; ``open`` shows a whole page. The bracketed id is what
``rewards.grounding`` looks for to tell that the gold page was actually retrieved.

BM25 is written here (no dependency for ~60 lines): tokens are the lowercase runs of letters and digits (no
stemming, no stop words, so ``max_lora_rank`` is ``max lora rank``), k1 = 1.5, b = 0.75, and the Lucene form of the
idf, ``ln(1 + (N - df + 0.5) / (df + 0.5))``, which is never negative. The tasks and the scripted expert are in
``envs.search_tasks``.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache, partial
from pathlib import Path

from envs.answer_env import AnswerEnv
from envs.base import Tool, ToolError
from envs.tasks import Task

__all__ = ["SearchEnv", "BM25", "Corpus", "Document", "Passage", "tokenize", "read_document", "build_corpus",
           "load_corpus", "search", "open_document", "SEARCH_TOOL", "OPEN_TOOL", "SYSTEM_PROMPT", "verify",
           "contains_fact", "answer_groups", "CORPUS_DIR", "MAX_ANSWER_CHARS"]

CORPUS_DIR = Path(__file__).with_name("search_corpus")
K1, B = 1.5, 0.75  # the usual BM25 constants: term-frequency saturation and length normalisation
DEFAULT_K, MAX_K = 3, 10  # passages per search: 3 fit a small model's context (~250 tokens); 10 is a page and a half
MAX_QUERY_CHARS = 500  # longer than any question; bounds the work one call can cause
# A final answer longer than this is not an answer but a dump: without the cap, pasting the search results into the
# answer would "contain the fact" and RL would learn to do exactly that. The expert's answers are under 250 chars.
MAX_ANSWER_CHARS = 400

_TOKEN = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    """Lowercase runs of letters and digits; everything else separates tokens.

    >>> tokenize("Set `rollout.max_lora_rank` to 16, not 4.9 M!")
    ['set', 'rollout', 'max', 'lora', 'rank', 'to', '16', 'not', '4', '9', 'm']
    """
    return _TOKEN.findall(text.lower())


class BM25:
    """Okapi BM25 over a fixed list of texts; ``scores(query)`` has one score per text, 0 when no term matches.

    >>> index = BM25(["the cat sat", "the dog sat on the dog", "a bird"])
    >>> [round(s, 4) for s in index.scores("dog")]
    [0.0, 1.1632, 0.0]
    """

    def __init__(self, texts: Sequence[str], *, k1: float = K1, b: float = B) -> None:
        self.k1, self.b = k1, b
        self._tf = [Counter(tokenize(t)) for t in texts]
        self._len = [sum(tf.values()) for tf in self._tf]
        self.avgdl = sum(self._len) / len(self._len) if self._len else 0.0
        df = Counter(term for tf in self._tf for term in tf)
        n = len(self._tf)
        self.idf = {term: math.log(1 + (n - d + 0.5) / (d + 0.5)) for term, d in df.items()}

    def scores(self, query: str) -> list[float]:
        """The BM25 score of every text for ``query``; a term repeated in the query counts once."""
        terms = [t for t in dict.fromkeys(tokenize(query)) if t in self.idf]
        out = []
        for tf, length in zip(self._tf, self._len):
            norm = self.k1 * (1 - self.b + self.b * length / self.avgdl) if self.avgdl else self.k1
            out.append(sum((self.idf[t] * tf[t] * (self.k1 + 1) / (tf[t] + norm) for t in terms if t in tf), 0.0))
        return out

    def top(self, query: str, k: int) -> list[tuple[int, float]]:
        """The ``k`` best (index, score) with a score above 0, best first; ties keep corpus order."""
        ranked = sorted(((s, -i) for i, s in enumerate(self.scores(query)) if s > 0), reverse=True)
        return [(-neg_i, s) for s, neg_i in ranked[:k]]


# ---- the corpus ----


@dataclass(frozen=True)
class Document:
    """One page: its id (the file's stem), title (its ``# `` line) and paragraphs."""

    id: str
    title: str
    paragraphs: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n\n".join(self.paragraphs)


@dataclass(frozen=True)
class Passage:
    """One paragraph of a page, the unit ``search`` ranks and shows."""

    doc_id: str
    index: int  # 0-based paragraph number within the page
    text: str


@dataclass(frozen=True)
class Corpus:
    """The pages by id, their passages in page order, and the BM25 index over the passages (read-only: one corpus
    serves every env instance of a process)."""

    documents: dict[str, Document]
    passages: tuple[Passage, ...]
    index: BM25

    def search(self, query: str, k: int = DEFAULT_K) -> list[tuple[Passage, float]]:
        """The ``k`` best passages for ``query`` with their scores, best first."""
        return [(self.passages[i], s) for i, s in self.index.top(query, k)]

    def rank_documents(self, query: str) -> list[str]:
        """Page ids ordered by their best passage's score (pages with no matching term left out)."""
        ranked: list[str] = []
        for passage, _ in self.search(query, len(self.passages)):
            if passage.doc_id not in ranked:
                ranked.append(passage.doc_id)
        return ranked


def read_document(path: Path) -> Document:
    """A page from a Markdown file: a ``# Title`` line, then paragraphs separated by blank lines."""
    lines = path.read_text(encoding="utf-8").strip().splitlines()
    if not lines or not lines[0].startswith("# "):
        raise ValueError(f"{path}: a corpus page must start with a '# Title' line. Fix: add one")
    body = "\n".join(lines[1:]).strip()
    paragraphs = tuple(" ".join(p.split()) for p in re.split(r"\n\s*\n", body) if p.strip())
    if not paragraphs:
        raise ValueError(f"{path}: no text after the title. Fix: write at least one paragraph")
    return Document(path.stem, lines[0][2:].strip(), paragraphs)


def build_corpus(documents: Sequence[Document]) -> Corpus:
    """Index every paragraph of ``documents``; a passage is indexed with its page's title, which names its topic."""
    docs = {d.id: d for d in documents}
    if len(docs) != len(documents):
        raise ValueError("duplicate document ids in the corpus. Fix: give every page a unique file name")
    passages = tuple(Passage(d.id, i, p) for d in documents for i, p in enumerate(d.paragraphs))
    titles = {d.id: d.title for d in documents}
    return Corpus(docs, passages, BM25([f"{titles[p.doc_id]}\n{p.text}" for p in passages]))


@lru_cache(maxsize=4)
def load_corpus(path: str | Path = CORPUS_DIR / "docs") -> Corpus:
    """The corpus of every ``*.md`` page under ``path`` (the shipped one by default), indexed once per process."""
    files = sorted(Path(path).glob("*.md"))
    if not files:
        raise FileNotFoundError(f"no corpus pages (*.md) under {path}. Fix: point at envs/search_corpus/docs")
    return build_corpus([read_document(f) for f in files])


# ---- the tools ----


def search(corpus: Corpus | None, query: str, k: int = DEFAULT_K) -> str:
    """The top ``k`` passages for ``query``, each headed by ``[doc_id] title (passage i of n)``.

    >>> print(search(load_corpus(), "which python version does agentrl require", k=1))  # doctest: +ELLIPSIS
    [install-cpu] Installing agentrl on a CPU machine (passage 1 of 3)
    agentrl needs Python version 3.11: the package declares ...
    """
    if corpus is None:
        raise ToolError("search is not bound to a corpus: call it through SearchEnv")
    text = query.strip()
    if not text:
        raise ToolError('empty query; write a few keywords, e.g. {"query": "default kl_coef"}')
    if len(text) > MAX_QUERY_CHARS:
        raise ToolError(f"query too long ({len(text)} chars; at most {MAX_QUERY_CHARS}): use a few keywords")
    if not 1 <= k <= MAX_K:
        raise ToolError(f"k must be between 1 and {MAX_K}, got {k}; leave it out for {DEFAULT_K} passages")
    hits = corpus.search(text, k)
    if not hits:
        return ("no results: no page contains any word of the query. Try other words, e.g. an option name, a "
                "command or an error message")  # the query is not echoed: a result must never show a made-up [id]
    blocks = []
    for passage, _ in hits:
        doc = corpus.documents[passage.doc_id]
        blocks.append(f"[{doc.id}] {doc.title} (passage {passage.index + 1} of {len(doc.paragraphs)})\n{passage.text}")
    return "\n\n".join(blocks)


def open_document(corpus: Corpus | None, doc_id: str) -> str:
    """The whole page ``doc_id``: ``[doc_id] title`` and its text. A bracketed id (``[lora-sync]``) is accepted."""
    if corpus is None:
        raise ToolError("open is not bound to a corpus: call it through SearchEnv")
    key = doc_id.strip().strip("[]").strip().lower()
    doc = corpus.documents.get(key)
    if doc is None:
        close = difflib.get_close_matches(key, list(corpus.documents), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else "; search first and use an id it shows in [brackets]"
        raise ToolError(f"unknown doc_id {doc_id[:60]!r}{hint}")
    return f"[{doc.id}] {doc.title}\n\n{doc.text}"


SEARCH_TOOL = Tool(
    name="search",
    description="Search the agentrl documentation. Returns the best-matching passages, each headed by its page id "
    'in [brackets]. Example: {"query": "default kl_coef of GRPO"}.',
    parameters={
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "keywords or a question, e.g. default max_turns"},
            "k": {"type": "integer", "description": f"how many passages to return, 1-{MAX_K} (default {DEFAULT_K})"},
        },
        "required": ["query"],
        "additionalProperties": False,
    },
    fn=partial(search, None),  # the env binds its corpus at construction
)
OPEN_TOOL = Tool(
    name="open",
    description='Read a whole documentation page by the id a search result showed in [brackets]. Example: '
    '{"doc_id": "lora-sync"}.',
    parameters={
        "type": "object",
        "properties": {"doc_id": {"type": "string", "description": "a page id such as lora-sync"}},
        "required": ["doc_id"],
        "additionalProperties": False,
    },
    fn=partial(open_document, None),
)

SYSTEM_PROMPT = (
    "You answer questions about the agentrl project from its documentation. Use the search tool to find the "
    "passages that answer the question, and open a page when a passage is not enough. Answer only from what the "
    "tools returned. Give the final answer as one short sentence that states the fact, followed by the page id in "
    "brackets, e.g. [lora-sync]."
)


# ---- verifier ----


def _normalise(text: str) -> str:
    """Lowercase, Markdown emphasis and code marks removed, whitespace collapsed, Unicode minus as '-'."""
    text = text.replace("`", "").replace("**", "").replace("\u2212", "-").replace("\u2013", "-")
    return " ".join(text.lower().split())


def contains_fact(text: str, alternative: str) -> bool:
    """Does ``text`` contain ``alternative`` as a whole: not inside a longer word or number ("0.2" is not in "0.25" or
    "10.2", "16" is not in "2016"; "use_gpu" is in "learner.use_gpu"), ignoring case, backticks and spacing?

    >>> contains_fact("The default is `0.2`.", "0.2"), contains_fact("It is 10.25", "0.2"), contains_fact("k=16", "16")
    (True, False, True)
    """
    pattern = r"(?<!\w)(?<!\d\.)" + re.escape(_normalise(alternative)) + r"(?![\w]|\.\d)"
    return re.search(pattern, _normalise(text)) is not None


def verify(task: Task, final_answer: str) -> bool:
    """True iff the answer is short (at most ``MAX_ANSWER_CHARS``) and contains the fact: for every group of the
    ground truth (a JSON list of groups, each a list of accepted spellings; a bare string is one group of one), one of
    its spellings.

    >>> t = Task("t", "search", "What is the default kl_coef?", '[["0.02"]]')
    >>> verify(t, "The default kl_coef is 0.02 [grpo]."), verify(t, "It is 0.2."), verify(t, "0.02 " + "x" * 400)
    (True, False, False)
    """
    if not isinstance(final_answer, str) or len(final_answer) > MAX_ANSWER_CHARS:
        return False
    try:
        groups = task.answer_value()
    except ValueError:
        return False
    if isinstance(groups, str):
        groups = [[groups]]
    if not isinstance(groups, list) or not groups:
        return False
    for group in groups:
        spellings = [group] if isinstance(group, str) else group
        if not isinstance(spellings, list) or not any(isinstance(s, str) and s and contains_fact(final_answer, s)
                                                      for s in spellings):
            return False
    return True


def answer_groups(task: Task) -> list[list[str]]:
    """The ground truth as a list of groups of accepted spellings (a bare string is one group of one)."""
    groups = task.answer_value()
    groups = [groups] if isinstance(groups, str) else groups
    return [[g] if isinstance(g, str) else list(g) for g in groups]


# ---- the environment ----


class SearchEnv(AnswerEnv):
    """One episode at a time: the model may search and open pages any number of times, then answers in text."""

    name = "search"
    system_prompt = SYSTEM_PROMPT

    def __init__(self, corpus: Corpus | None = None) -> None:
        self.corpus = corpus or load_corpus()
        super().__init__([replace(SEARCH_TOOL, fn=partial(search, self.corpus)),
                          replace(OPEN_TOOL, fn=partial(open_document, self.corpus))])

    def verify(self, task: Task, answer: str) -> bool:
        return verify(task, answer)


def _doc_json(doc: Document) -> str:
    """One page as a JSON line (id, title, text): an export format for other tools (``python -m envs.search_env``)."""
    return json.dumps({"id": doc.id, "title": doc.title, "text": doc.text}, ensure_ascii=False)


if __name__ == "__main__":  # the corpus as JSONL: python -m envs.search_env > corpus.jsonl
    for document in load_corpus().documents.values():
        print(_doc_json(document))
