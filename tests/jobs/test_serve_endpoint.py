"""The serve job for real: Ray Serve on the session's Ray cluster, one replica with the real vLLM engine serving the
base model and the test session's SFT adapter, asked through the ``openai`` client and through raw HTTP.

One module-scoped deployment (an engine start is ~40 s here) serves three checks: a calculator chat comes back as an
OpenAI tool call; 200 requests, 16 at a time, get no 5xx; malformed bodies, unknown models and oversized prompts get
4xx with a message naming the problem (issue 8's load and bad-input rules).
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from envs.calculator import CALCULATOR_TOOL, SYSTEM_PROMPT, generate_tasks

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

LOAD_REQUESTS, LOAD_CONCURRENCY, LOAD_MAX_TOKENS = 200, 16, 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def endpoint(ray_cluster, sft_adapter):
    """(base_url, served model ids) of a local Serve app; torn down (engine included) after the module."""
    from ray import serve

    from jobs.config_loader import load_config
    from jobs.serve import build
    from jobs.serve_config import ServeConfig

    port = _free_port()
    cfg = load_config(ServeConfig, "configs/serve.yaml", [f"adapter={sft_adapter}", "adapter_name=sft",
                                                          f"http.port={port}", "deployment.min_replicas=1",
                                                          "deployment.max_replicas=1"])
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build(cfg), name="agentrl-test", route_prefix="/")
        base = f"http://127.0.0.1:{port}/v1"
        with urllib.request.urlopen(f"{base}/models", timeout=30) as r:
            models = [m["id"] for m in json.load(r)["data"]]
        yield base, models
    finally:
        serve.shutdown()


def _post(base: str, body: bytes | dict, timeout: float = 120) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(f"{base}/chat/completions", data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def test_models_lists_the_base_and_the_adapter(endpoint):
    _, models = endpoint
    assert len(models) == 2 and "sft" in models, models


def test_openai_client_gets_a_calculator_tool_call(endpoint):
    from openai import OpenAI

    base, models = endpoint
    client = OpenAI(base_url=base, api_key="unused", timeout=120, max_retries=0)
    task = generate_tasks(1, seed=11, split="test")[0]
    reply = client.chat.completions.create(
        model="sft", temperature=0, max_tokens=96, tools=[CALCULATOR_TOOL.schema()],
        messages=[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": task.prompt}])
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls", choice.message
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "calculator"
    assert isinstance(json.loads(call.function.arguments)["expression"], str)
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0

    # the tool result goes back in OpenAI's format and the adapter answers in text
    follow = client.chat.completions.create(
        model="sft", temperature=0, max_tokens=64, tools=[CALCULATOR_TOOL.schema()],
        messages=[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": task.prompt},
                  choice.message.model_dump(exclude_none=True),
                  {"role": "tool", "tool_call_id": call.id, "content": "42"}])
    assert follow.choices[0].message.content


def test_bounded_concurrent_load_gets_no_server_errors(endpoint):
    base, models = endpoint
    bodies = [{"model": models[i % 2], "max_tokens": LOAD_MAX_TOKENS, "temperature": 1.0, "seed": i,
               "messages": [{"role": "user", "content": f"Say a word about the number {i}."}]}
              for i in range(LOAD_REQUESTS)]
    with ThreadPoolExecutor(LOAD_CONCURRENCY) as pool:
        results = list(pool.map(lambda b: _post(base, b, timeout=300), bodies))
    codes = [code for code, _ in results]
    assert codes.count(200) == LOAD_REQUESTS, {c: codes.count(c) for c in set(codes)}
    assert all(0 < body["usage"]["completion_tokens"] <= LOAD_MAX_TOKENS for _, body in results)


@pytest.mark.parametrize("body, status, words", [
    (b'{"model": "sft", "messages": [', 400, "JSON"),
    (b"not json at all", 400, "JSON"),
    ({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}, 404, "not served here"),
    ({"model": "sft", "messages": [{"role": "user", "content": "word " * 5000}]}, 400, "exceed the context"),
    ({"model": "sft", "max_tokens": 10**6, "messages": [{"role": "user", "content": "hi"}]}, 400, "max_tokens"),
    ({"model": "sft", "messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages.0.role"),
])
def test_bad_requests_get_4xx_naming_the_problem(endpoint, body, status, words):
    base, _ = endpoint
    code, reply = _post(base, body)
    assert code == status, (code, reply)
    message = reply["error"]["message"]
    assert words in message and "Fix" in message, message
