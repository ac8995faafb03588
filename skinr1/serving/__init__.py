"""Serving a trained SkinR1 policy with Ray Serve and vLLM (`skinr1 serve`, docs/serving.md).

Modules, one job each:

* `config`: `ServeConfig` (HTTP, replicas/autoscaling, limits, auth, generation defaults);
* `policy`: checkpoint directory -> base model + LoRA adapter + policy version (safetensors only);
* `requests`: request validation (content type, size, auth, JSON/form fields, image) -> status codes;
* `responses`: the /v1/diagnose body from a completion (shared answer parser + taxonomy);
* `openai_compat`: the OpenAI chat-completions schema;
* `service`: the async vLLM engine and what each endpoint does with it (no HTTP, no Ray);
* `app`: the Serve deployment, a thin HTTP shell around the service.

Only `config` is imported here: the others pull in vLLM, Ray or FastAPI.
"""

from __future__ import annotations

from skinr1.serving.config import ServeConfig

__all__ = ["ServeConfig"]
