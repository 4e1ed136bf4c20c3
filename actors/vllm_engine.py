"""The vLLM engine behind a rollout worker: token-in/token-out generation with per-request adapter versions.

Behavior logprobs must be the ones the sampler used (after temperature), so the engine runs with
``logprobs_mode="processed_logprobs"``; top-p/top-k stay off in training (RolloutConfig.top_p = 1).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from actors.adapters import AdapterVersion
from actors.config import RolloutConfig
from actors.episode import Generation, Sampling


class VLLMBackend:
    def __init__(self, model_path: str, cfg: RolloutConfig):
        # Read by vLLM-CPU when the engine starts; ignored on GPU.
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(max(1, int(round(cfg.kv_cache_gib))))
        from vllm import LLM
        from vllm.platforms import current_platform

        kwargs = {}
        if not current_platform.is_cpu():
            kwargs["gpu_memory_utilization"] = cfg.gpu_memory_utilization
        else:
            # vLLM-CPU dies on a seeded request whose prompt is prefilled in chunks: it rewinds the request's
            # generator, which CPU generators cannot do ("CPU Generator does not use offset"). Our requests are all
            # seeded, and a turn's batch passes the 4096-token budget at ~64 episodes, so prompts are never chunked
            # on CPU: a prompt that does not fit this step waits for the next.
            kwargs.update(enable_chunked_prefill=False, max_num_batched_tokens=max(4096, cfg.max_model_len))
        self.merged = cfg.adapter_serving == "merged" or (cfg.adapter_serving == "auto" and current_platform.is_cpu())
        if self.merged:
            kwargs["worker_extension_cls"] = "actors.merged_weights.MergedAdapterExtension"
        elif cfg.enable_lora:
            kwargs.update(enable_lora=True, max_lora_rank=cfg.max_lora_rank, max_loras=cfg.max_loras)
        self.model_path, self.max_model_len = model_path, cfg.max_model_len
        self.serving_version = 0  # merged serving: the one version the weights hold now
        self.llm = LLM(model=model_path, dtype=cfg.dtype, max_model_len=cfg.max_model_len,
                       max_num_seqs=cfg.max_num_seqs, logprobs_mode="processed_logprobs",
                       enable_prefix_caching=True, enforce_eager=cfg.enforce_eager, seed=cfg.seed, **kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.eos_token_id = self.tokenizer.eos_token_id
        self._loras: dict[int, object] = {}

    def add_adapter(self, entry: AdapterVersion) -> None:
        """Load an adapter version into the engine now (not lazily at the first request), so a load error shows here.
        Merged serving swaps it into the weights: from now on it is the only version served."""
        from vllm.lora.request import LoRARequest

        if self.merged:
            self.activate(entry.version, entry.path)
            return
        request = LoRARequest(entry.name, entry.int_id, entry.path)
        if not self.llm.llm_engine.add_lora(request):
            raise RuntimeError(f"vLLM refused adapter version {entry.version} at {entry.path}")
        self._loras[entry.version] = request

    def activate(self, version: int, path: str | None) -> None:
        """Merged serving: put ``version`` (adapter at ``path``; None = the base) into the weights. LoRA: no-op."""
        if not self.merged or version == self.serving_version:
            return
        self.llm.collective_rpc("agentrl_merge_adapter", args=(self.model_path, path))
        self.llm.reset_prefix_cache()  # cached KV blocks were computed with the old weights
        self.serving_version = version

    def remove_adapter(self, version: int) -> None:
        request = self._loras.pop(version, None)
        if request is not None:
            self.llm.llm_engine.remove_lora(request.lora_int_id)

    def _lora(self, version: int):
        if self.merged:
            if version != self.serving_version:
                raise KeyError(f"merged serving holds one version, {self.serving_version}; version {version} was "
                               "asked for. Fix: use_version() it first, or rollout.adapter_serving=lora")
            return None
        if version in self._loras:
            return self._loras[version]
        if version == 0:
            return None  # version 0 without an adapter is the base model
        raise KeyError(f"adapter version {version} is not loaded on this worker; loaded: {sorted(self._loras)}")

    def generate(self, prompts: Sequence[list[int]], sampling: Sequence[Sampling],
                 versions: Sequence[int]) -> list[Generation]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not prompts:
            return []
        params = [SamplingParams(max_tokens=s.max_tokens, temperature=s.temperature, top_p=s.top_p, seed=s.seed,
                                 stop=list(s.stop), include_stop_str_in_output=True, logprobs=0,
                                 skip_special_tokens=False) for s in sampling]
        loras = [self._lora(v) for v in versions]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params,
                                 lora_request=loras if any(loras) else None, use_tqdm=False)
        result = []
        for out in outs:
            c = out.outputs[0]
            ids = list(c.token_ids)
            logprobs = [step[tok].logprob for step, tok in zip(c.logprobs, ids)]
            stop_str = c.stop_reason if isinstance(c.stop_reason, str) else None
            result.append(Generation(ids, logprobs, c.finish_reason, stop_str))
        return result

    def prompt_logprobs(self, token_ids: list[int], version: int) -> list[float]:
        """Logprob of each token given its prefix (temperature 1), under ``version``; the first token has none."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(max_tokens=1, temperature=1.0, prompt_logprobs=0)
        out = self.llm.generate([TokensPrompt(prompt_token_ids=list(token_ids))], params,
                                lora_request=self._lora(version), use_tqdm=False)[0]
        return [step[tok].logprob for step, tok in zip(out.prompt_logprobs[1:], token_ids[1:])]

    def generate_chat(self, conversations: Sequence[list[dict]], *, max_tokens: int,
                      temperature: float = 0.0) -> list[str]:
        """Text replies to chat ``conversations`` (message lists), rendered with the model's own chat template, from
        the base weights: no ``LoRARequest`` (the LLM judge, rewards/judge.py). ``temperature=0`` is greedy. A
        conversation that leaves no room for a reply in ``max_model_len`` gets ``""`` (its judge value falls back)
        instead of failing the batch. Merged serving has no base model to ask: RuntimeError naming the fix.
        """
        if self.merged:
            raise RuntimeError("this engine serves the adapter merged into its weights (rollout.adapter_serving="
                               "merged, or auto on CPU), so the base model is not there to judge. Fix: set "
                               "rollout.adapter_serving=lora, or reward.judge=actor with reward.judge_model")
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        prompts, fits = [], []
        for messages in conversations:
            text = self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
            ids = self.tokenizer.encode(text, add_special_tokens=False)  # the template writes its own specials
            fits.append(len(ids) < self.max_model_len)
            if fits[-1]:
                prompts.append((ids, min(max_tokens, self.max_model_len - len(ids))))
        params = [SamplingParams(max_tokens=room, temperature=temperature, seed=0) for _, room in prompts]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for ids, _ in prompts], params,
                                 use_tqdm=False) if prompts else []
        texts = iter(out.outputs[0].text for out in outs)
        return [next(texts) if ok else "" for ok in fits]
