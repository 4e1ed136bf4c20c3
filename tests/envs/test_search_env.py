"""The search env: BM25 against hand-computed scores, the tools and their errors, the shipped corpus and questions,
retrieval quality, tasks (determinism, splits by page), the verifier, and the scripted expert played through the env."""

from __future__ import annotations

import doctest
import json
import math

import pytest

import envs
from envs import search_env, search_tasks
from envs.search_env import BM25, MAX_ANSWER_CHARS, SearchEnv, contains_fact, load_corpus, tokenize, verify
from envs.search_tasks import FRAMINGS, generate_tasks, load_questions, scripted_expert, split_of
from envs.tasks import Task
from envs.tool_calls import ToolCall, parse_tool_calls

pytestmark = pytest.mark.timeout(60)


def call(name: str, **arguments) -> ToolCall:
    return ToolCall(name, arguments, raw="", strict=True)


def task(answer, meta: dict | None = None) -> Task:
    meta = {"doc_id": "grpo", "question": "What is the default kl_coef of the learner?"} if meta is None else meta
    return Task("t", "search", "What is the default kl_coef of the learner?", json.dumps(answer), json.dumps(meta))


def started() -> SearchEnv:
    env = SearchEnv()
    env.reset(task([["0.02"]]))
    return env


# ---- BM25, by hand ----


def test_bm25_matches_a_hand_computed_score():
    # N = 3 texts of 3, 2 and 4 tokens: avgdl = 3. df(apple) = 1, df(cherry) = 2.
    index = BM25(["apple banana apple", "banana cherry", "cherry cherry cherry date"])
    idf_apple = math.log(1 + (3 - 1 + 0.5) / (1 + 0.5))  # ln(8/3)
    idf_cherry = math.log(1 + (3 - 2 + 0.5) / (2 + 0.5))  # ln(1.6)
    # tf (k1 + 1) / (tf + k1 (1 - b + b dl / avgdl)), k1 = 1.5, b = 0.75
    doc0 = idf_apple * 2 * 2.5 / (2 + 1.5 * (0.25 + 0.75 * 3 / 3))  # = idf * 10/7
    doc1 = idf_cherry * 1 * 2.5 / (1 + 1.5 * (0.25 + 0.75 * 2 / 3))  # = idf * 20/17
    doc2 = idf_cherry * 3 * 2.5 / (3 + 1.5 * (0.25 + 0.75 * 4 / 3))  # = idf * 20/13
    assert index.scores("apple cherry") == pytest.approx([doc0, doc1, doc2], rel=1e-12)
    assert [round(x, 4) for x in (doc0, doc1, doc2)] == [1.4012, 0.5529, 0.7231]
    assert index.scores("Apple, APPLE cherry!") == pytest.approx([doc0, doc1, doc2])  # case; a repeat counts once
    assert [i for i, _ in index.top("apple cherry", 3)] == [0, 2, 1]
    assert [i for i, _ in index.top("banana", 5)] == [1, 0]  # same tf: the shorter text ranks first (b = 0.75)
    assert [i for i, _ in BM25(["x y", "y x", "z"]).top("x", 5)] == [0, 1]  # ties keep corpus order
    assert index.scores("durian") == [0.0, 0.0, 0.0] and index.top("durian", 3) == []


def test_tokenize_splits_on_everything_but_letters_and_digits():
    assert tokenize("`rollout.max_lora_rank` = 16; 4.9 M") == ["rollout", "max", "lora", "rank", "16", "4", "9", "m"]


# ---- the tools ----


def test_search_shows_passages_with_their_page_ids():
    step = started().step(call("search", query="default kl_coef of the learner", k=2))
    assert step.info["ok"] and not step.done
    blocks = step.observation.split("\n\n")
    assert len(blocks) == 2 and blocks[0].startswith("[grpo] GRPO: group-normalised advantages (passage 2 of 3)\n")
    assert "`learner.kl_coef` (default 0.02)" in blocks[0]
    default_k = started().step(call("search", query="default kl_coef"))
    assert default_k.observation.count("\n\n") == 2  # 3 passages by default


def test_open_shows_a_whole_page():
    doc = load_corpus().documents["lora-sync"]
    for doc_id in ("lora-sync", " [lora-sync] ", "LoRA-Sync"):
        step = started().step(call("open", doc_id=doc_id))
        assert step.info["ok"] and step.observation == f"[lora-sync] {doc.title}\n\n{doc.text}"


@pytest.mark.parametrize(
    ("name", "arguments", "message"),
    [
        ("search", {"query": "  "}, 'empty query; write a few keywords, e.g. {"query": "default kl_coef"}'),
        ("search", {"query": "kl", "k": 0}, "k must be between 1 and 10, got 0; leave it out for 3 passages"),
        ("search", {"query": "kl", "k": 11}, "k must be between 1 and 10, got 11"),
        ("search", {"query": "x" * 501}, "query too long (501 chars; at most 500)"),
        ("search", {"q": "kl"}, "missing required 'query'"),
        ("search", {"query": "kl", "k": "3"}, "'k' must be an integer, got string"),
        ("open", {"doc_id": "lora-synk"}, "unknown doc_id 'lora-synk'; did you mean 'lora-sync'?"),
        ("open", {"doc_id": "zzz"}, "unknown doc_id 'zzz'; search first and use an id it shows in [brackets]"),
        ("fetch", {"url": "x"}, "unknown tool 'fetch'; available: open, search"),
    ],
)
def test_bad_inputs_are_error_observations_with_the_fix(name, arguments, message):
    step = started().step(call(name, **arguments))
    assert step.observation.startswith("error: ") and message in step.observation, step.observation
    assert step.info["ok"] is False and not step.done


def test_unbound_tools_say_how_to_use_them():
    for tool, arguments in ((search_env.SEARCH_TOOL, {"query": "kl"}), (search_env.OPEN_TOOL, {"doc_id": "grpo"})):
        step = envs.call_tool({tool.name: tool}, call(tool.name, **arguments))
        assert step.observation == f"error: {tool.name} is not bound to a corpus: call it through SearchEnv"


def test_no_results_is_an_answer_not_an_error():
    step = started().step(call("search", query="zzzqqq [xyzzy]"))
    assert step.info["ok"] and step.observation.startswith("no results: no page contains any word of the query")
    assert "[xyzzy]" not in step.observation  # a result never echoes a made-up page id (grounding reads them)


def test_env_reset_and_step():
    env = SearchEnv()
    t = task([["0.02"]])
    messages, tools = env.reset(t)
    assert [m["role"] for m in messages] == ["system", "user"] and messages[1]["content"] == t.prompt
    assert [tool.name for tool in tools] == ["search", "open"]
    assert tools[0].schema()["function"]["parameters"]["required"] == ["query"]
    final = env.step("The default kl_coef is 0.02 [grpo].")
    assert (final.observation, final.reward, final.done, final.info) == (None, 1.0, True, {"correct": True})
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step("again")


def test_doctests():
    for module in (search_env, search_tasks):
        result = doctest.testmod(module)  # a failure's details are in the captured stdout
        assert result.failed == 0 and result.attempted > 0, module.__name__


# ---- the corpus and its questions ----


def test_the_shipped_corpus_and_questions_agree():
    corpus = load_corpus()
    assert 30 <= len(corpus.documents) <= 45
    assert all(doc.title and doc.paragraphs for doc in corpus.documents.values())
    questions = load_questions()  # raises unless every answer's first spelling is on its page
    assert len(questions) >= 120 and {q["doc_id"] for q in questions} == set(corpus.documents)
    assert len({q["question"] for q in questions}) == len(questions)


def test_retrieval_ranks_the_gold_page_first_for_most_questions():
    """Measured: 128/137 questions (93.4%) rank their page first, 136/137 have it among the top 3 passages."""
    corpus = load_corpus()
    questions = load_questions()
    first = sum(corpus.rank_documents(q["question"])[:1] == [q["doc_id"]] for q in questions) / len(questions)
    top3 = sum(q["doc_id"] in {p.doc_id for p, _ in corpus.search(q["question"], 3)} for q in questions)
    assert first >= 0.9 and top3 / len(questions) >= 0.97, (first, top3)
    tasks = [t for split in ("train", "val", "test") for t in generate_tasks(60, seed=0, split=split)]
    framed = sum(corpus.rank_documents(t.prompt)[:1] == [t.meta_value()["doc_id"]] for t in tasks) / len(tasks)
    assert framed >= 0.9, framed  # the framings ("Quick question about agentrl: ...") barely move the ranking


# ---- tasks ----


def test_generate_tasks_is_deterministic_and_distinct():
    tasks = generate_tasks(100, seed=7)
    assert tasks == generate_tasks(100, seed=7) and tasks != generate_tasks(100, seed=8)
    assert len({t.task_id for t in tasks}) == 100 and tasks[3].task_id == "search-train-7-3"
    assert len({t.prompt for t in tasks}) == 100
    n_questions = sum(split_of(q["doc_id"]) == "train" for q in load_questions())
    assert len({t.meta_value()["question"] for t in tasks[:n_questions]}) == n_questions  # all before any repeat
    for t in tasks:
        meta = t.meta_value()
        assert meta["split"] == "train" and t.env == "search" and meta["difficulty"] in (1, 2)
        assert meta["question"] in t.prompt or meta["question"][1:] in t.prompt


def test_splits_are_by_page_and_never_share_a_page_or_a_question():
    docs, questions = {}, {}
    for split in ("train", "val", "test"):
        n = sum(split_of(q["doc_id"]) == split for q in load_questions()) * len(FRAMINGS)
        tasks = generate_tasks(n, seed=0, split=split)  # every task the split has
        docs[split] = {t.meta_value()["doc_id"] for t in tasks}
        questions[split] = {t.meta_value()["question"] for t in tasks}
        assert {t.meta_value()["split"] for t in tasks} == {split} and len(docs[split]) >= 5
        with pytest.raises(ValueError, match=f"could only generate {n} distinct {split} tasks of {n + 1}"):
            generate_tasks(n + 1, seed=0, split=split)
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not docs[a] & docs[b] and not questions[a] & questions[b], (a, b)
    with pytest.raises(ValueError, match="unknown split 'dev'; known: train, val, test"):
        generate_tasks(1, seed=0, split="dev")


# ---- verifier ----


@pytest.mark.parametrize(
    ("answer", "text", "ok"),
    [
        ([["0.02"]], "The default kl_coef is 0.02 [grpo].", True),
        ([["0.02"]], "It is `0.02`", True),
        ([["0.02"]], "It is 0.2", False),
        ([["0.02"]], "It is 0.025", False),  # not inside a longer number
        ([["0.02"]], "It is 10.02", False),
        ([["0.02"]], "I don't know", False),
        ([["use_gpu", "learner.use_gpu"]], "Set learner.use_gpu: true.", True),
        ([["use_gpu"]], "Set misuse_gpu", False),
        ([["4.3 GB", "4.3GB"]], "about 4.3  gb", True),  # case and spacing
        ([["torchvision"], ["torchaudio"], ["torchcodec"]], "torchvision, torchaudio and torchcodec", True),
        ([["torchvision"], ["torchaudio"], ["torchcodec"]], "torchvision and torchaudio", False),  # all groups
        ([["0.02"]], "0.02 " + "x" * MAX_ANSWER_CHARS, False),  # a dump of the results is not an answer
        ("0.02", "It is 0.02", True),  # a bare string is one group of one
    ],
)
def test_verify(answer, text, ok):
    assert verify(task(answer), text) is ok


def test_verify_rejects_unusable_ground_truth():
    assert not verify(Task("t", "search", "q", "not json"), "0.02")
    assert not verify(task([]), "0.02") and not verify(task(3), "3") and not verify(task([[""]]), "x")
    assert not verify(task([["0.02"]]), None)
    assert contains_fact("rollout.max_model_len", "max_model_len") and not contains_fact("2016", "16")


# ---- the scripted expert ----


@pytest.mark.parametrize("split", ["train", "test"])
def test_scripted_expert_through_the_env_is_accepted(split):
    for t in generate_tasks(50, seed=5, split=split):
        env = SearchEnv()
        env.reset(t)
        *tool_steps, final = scripted_expert(t)
        assert tool_steps and len(tool_steps) % 2 == 0
        for assistant, tool in zip(tool_steps[::2], tool_steps[1::2]):
            calls, errors = parse_tool_calls(assistant["content"])
            assert errors == [] and len(calls) == 1 and calls[0].strict and calls[0].arguments, assistant
            text = assistant["content"]
            assert text.startswith("<tool_call>\n{") and text.endswith("}\n</tool_call>")
            step = env.step(calls[0])
            assert step.info["ok"] and step.observation == tool["content"] and tool["role"] == "tool"
        first = parse_tool_calls(tool_steps[0]["content"])[0][0]
        assert first.name == "search" and first.arguments == {"query": t.meta_value()["question"].rstrip("?")}
        assert any(f"[{t.meta_value()['doc_id']}]" in s["content"] for s in tool_steps[1::2])  # grounded
        assert final["role"] == "assistant" and len(final["content"]) <= MAX_ANSWER_CHARS
        assert env.step(final["content"]).reward == 1.0, (t.prompt, final)


def test_scripted_expert_needs_the_gold_page():
    with pytest.raises(ValueError, match="has no meta.doc_id / meta.question"):
        scripted_expert(task([["0.02"]], meta={}))


def test_sft_expert_demos_work_for_search(monkeypatch):
    """The lines the integrator adds (ENVS, EXPERTS) are enough for SFT, recovery demos included."""
    from learners import sft_data

    monkeypatch.setitem(envs.ENVS, "search", SearchEnv)
    monkeypatch.setitem(sft_data.EXPERTS, "search", (generate_tasks, scripted_expert))
    demos = sft_data.expert_demos("search", 30, 0, recovery_fraction=1.0)
    assert len(demos) == 30
    for demo in demos:
        assert demo[2]["weight"] == 0 and demo[3]["content"].startswith("error: ")  # every demo opens with a mistake
        assert [tool["function"]["name"] for tool in demo[0]["tools"]] == ["search", "open"]
