"""The serving core: one asynchronous vLLM engine holding the policy, and what a request does with it.

No HTTP and no Ray here: a Serve replica (`skinr1.serving.app`) wraps one `DiagnosisService`, and the
benchmark calls the very same object in-process. The engine is vLLM's `AsyncLLMEngine`, built from
the same `EngineSettings`/`engine_kwargs` as the rollout and evaluation engines: concurrent requests
join the running batch (continuous batching) instead of waiting for each other.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from typing import Any, Sequence

from rollout.engine import EngineSettings, engine_kwargs, prepare_engine_process
from rollout.sampling import VISION_SPECIAL_TOKENS, SamplingSettings, vllm_sampling_params
from skinr1.prompts import DEFAULT_FORMAT, ChoiceOption, options_from_labels
from skinr1.prompts.questions import question_messages
from skinr1.serving.config import ServeConfig
from skinr1.serving.openai_compat import ChatInput, chat_completion_body
from skinr1.serving.policy import ServedPolicy
from skinr1.serving.requests import DiagnoseInput, ImageLimits, RequestError
from skinr1.serving.upload_decoder import UploadDecoder
from skinr1.serving.responses import diagnosis_response


@dataclass(frozen=True)
class Generation:
    """What the engine produced for one prompt."""

    texts: list[str]
    finish_reasons: list[str | None]
    prompt_tokens: int
    completion_tokens: int


def serving_engine_settings(policy: ServedPolicy, settings: EngineSettings) -> EngineSettings:
    """The configured engine settings, with LoRA switched on exactly when the policy is an adapter,
    and the dtype and pixel bounds the policy was trained with (its skinr1_policy.json) where the
    configuration leaves them open: a served policy sees images as its training did."""
    from skinr1.config.derive import recorded_engine_settings

    settings = recorded_engine_settings(settings, policy.metadata)
    if policy.adapter is not None and policy.adapter_rank > settings.max_lora_rank:
        raise ValueError(
            f"the adapter has rank {policy.adapter_rank} but engine.max_lora_rank is {settings.max_lora_rank}; "
            f"set engine.max_lora_rank={policy.adapter_rank} or higher"
        )
    return dataclasses.replace(settings, enable_lora=policy.adapter is not None)


def build_async_engine(model: str, settings: EngineSettings, log_stats: bool = False):
    """An `AsyncLLMEngine` with the same arguments `rollout.engine.build_llm` gives `vllm.LLM`."""
    prepare_engine_process(settings)
    from vllm import AsyncEngineArgs, AsyncLLMEngine

    kwargs = engine_kwargs(model, settings)
    # Only safetensors weights: vLLM would otherwise fall back to unpickling .bin/.pt files.
    kwargs["load_format"] = "safetensors"
    return AsyncLLMEngine.from_engine_args(AsyncEngineArgs(**kwargs, disable_log_stats=not log_stats))


class DiagnosisService:
    """A policy behind an async vLLM engine: /v1/diagnose and chat completions without the HTTP."""

    def __init__(self, policy: ServedPolicy, config: ServeConfig):
        from skinr1.taxonomy import default_resolver
        from skinr1.trajectories.knowledge_base import load_knowledge_base

        self.policy = policy
        self.config = config
        self.settings = serving_engine_settings(policy, config.engine)
        self.resolver = default_resolver()
        self.taxonomy = self.resolver.taxonomy
        # Differentials come from the shipped textbook knowledge base, then the taxonomy's DDx.
        self._kb_differentials = load_knowledge_base(None, self.taxonomy).differentials()
        self.limits = ImageLimits(
            max_bytes=config.max_image_bytes,
            max_pixels=config.max_image_pixels,
            resize_min_pixels=self.settings.min_pixels,
            resize_max_pixels=self.settings.max_pixels,
        )
        # Large uploads decode one per reserved CPU, in low-priority processes: the cores stay with
        # the engine and the small requests.
        self.decoder = UploadDecoder(self.limits, config.replica_decode_concurrency, config.decode_nice)
        self.engine = build_async_engine(policy.base, self.settings, log_stats=config.log_engine_stats)
        self.tokenizer = self.engine.get_tokenizer()
        self.blocked_token_ids = [self.tokenizer.convert_tokens_to_ids(t) for t in VISION_SPECIAL_TOKENS]
        self.lora_request = None
        if policy.adapter is not None:
            from vllm.lora.request import LoRARequest

            self.lora_request = LoRARequest(f"policy-v{policy.policy_version}", 1, policy.adapter)
        self._open_prompt = self.question_prompt("open", ())

    # ----------------------------------------------------------------- prompts
    def question_prompt(self, mode: str, options: Sequence[ChoiceOption]) -> str:
        """The question SFT and GRPO asked (first phrasing), rendered with the checkpoint's template."""
        messages = question_messages(mode, options, DEFAULT_FORMAT, self.config.include_system_prompt, question_variant=0)
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def choice_options(self, labels: Sequence[str]) -> list[ChoiceOption]:
        try:
            return options_from_labels(self.resolver, list(labels))
        except ValueError as error:
            raise RequestError(422, str(error)) from None

    def differentials(self, node_id: str) -> tuple[str, ...]:
        from skinr1.trajectories.ddx import ddx_neighbours

        return ddx_neighbours(node_id, self.taxonomy, self._kb_differentials)[0]

    # ----------------------------------------------------------------- generation
    async def generate(self, prompt: str, image=None, *, max_tokens: int, temperature: float, top_p: float = 1.0,
                       n: int = 1, seed: int | None = None) -> Generation:
        """Sample `n` completions of one prompt; vision special tokens are blocked as in rollout."""
        from vllm.exceptions import GracefulHTTPError, VLLMClientError
        from vllm.sampling_params import RequestOutputKind

        sampling = SamplingSettings(group_size=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens)
        params = vllm_sampling_params(sampling, self.blocked_token_ids, seed, n)
        params.output_kind = RequestOutputKind.FINAL_ONLY  # one output per request, not one per token
        request: dict[str, Any] = {"prompt": prompt}
        if image is not None:
            request["multi_modal_data"] = {"image": image}
        final = None
        try:
            async for output in self.engine.generate(request, params, uuid.uuid4().hex, lora_request=self.lora_request):
                final = output
        except GracefulHTTPError as error:
            raise RequestError(int(error.http_status), error.message) from None
        except (VLLMClientError, ValueError) as error:
            # Prompt longer than the context, too many image tokens...: the request's fault.
            raise RequestError(400, f"the engine rejected the request: {error}") from None
        if final is None:
            raise RuntimeError("the engine returned no output")
        return Generation(
            texts=[c.text for c in final.outputs],
            finish_reasons=[c.finish_reason for c in final.outputs],
            prompt_tokens=len(final.prompt_token_ids or []),
            completion_tokens=sum(len(c.token_ids) for c in final.outputs),
        )

    async def decode(self, data: bytes):
        return await self.decoder.decode(data)

    # ----------------------------------------------------------------- endpoints
    async def diagnose(self, request: DiagnoseInput) -> dict[str, Any]:
        image = await self.decode(request.image)
        options = self.choice_options(request.options) if request.mode == "choice" else []
        prompt = self._open_prompt if request.mode == "open" else self.question_prompt(request.mode, options)
        result = await self.generate(
            prompt, image, max_tokens=request.max_tokens or self.config.max_tokens, temperature=self.config.temperature
        )
        return diagnosis_response(
            result.texts[0],
            mode=request.mode,
            options=options,
            taxonomy=self.taxonomy,
            differentials_of=self.differentials,
            model=self.model_name,
            policy_version=self.policy.policy_version,
            finish_reason=result.finish_reasons[0],
        )

    async def chat(self, chat: ChatInput) -> dict[str, Any]:
        images = [await self.decode(data) for data in chat.images]
        image = images[0] if len(images) == 1 else (images or None)
        prompt = self.tokenizer.apply_chat_template(chat.messages, add_generation_prompt=True, tokenize=False)
        result = await self.generate(prompt, image, max_tokens=chat.max_tokens,
                                     temperature=chat.temperature, top_p=chat.top_p, n=chat.n, seed=chat.seed)
        return chat_completion_body(uuid.uuid4().hex, self.model_name, result.texts, result.finish_reasons,
                                    result.prompt_tokens, result.completion_tokens, self.policy.policy_version)

    # ----------------------------------------------------------------- lifecycle
    @property
    def model_name(self) -> str:
        return self.policy.name

    @property
    def engine_errored(self) -> bool:
        return bool(self.engine.errored)

    async def check_health(self) -> None:
        await self.engine.check_health()

    def info(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "policy_version": self.policy.policy_version,
            "base": self.policy.base,
            "adapter": self.policy.adapter,
            "metadata": self.policy.metadata,
        }

    def shutdown(self) -> None:
        decoder, self.decoder = getattr(self, "decoder", None), None
        if decoder is not None:
            decoder.shutdown()
        engine, self.engine = getattr(self, "engine", None), None
        if engine is not None:
            engine.shutdown()
