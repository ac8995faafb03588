"""Response bodies as pure functions: the /v1/diagnose schema and the error body.

A completion is read with the shared parser (`skinr1.prompts.parse_completion` / `resolve_answer`),
the same code that scores rewards and evaluation, so the server never disagrees with training about
what the model answered. A completion that cannot be read is not a server error: the diagnosis
fields are null and the raw text is returned for the client to inspect.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from skinr1.prompts import ChoiceOption, parse_completion, resolve_answer
from skinr1.taxonomy import Taxonomy

DIAGNOSIS_KEYS = (
    "diagnosis", "node_id", "path", "malignancy", "differentials", "reasoning", "model", "policy_version",
)
"""Keys every /v1/diagnose response has (more follow: see `diagnosis_response`)."""

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "request_too_large",
    415: "unsupported_media_type",
    422: "invalid_request_error",
    503: "service_unavailable",
}


def diagnosis_response(
    completion: str,
    *,
    mode: str,
    options: Sequence[ChoiceOption],
    taxonomy: Taxonomy,
    differentials_of: Callable[[str], Sequence[str]],
    model: str,
    policy_version: int,
    finish_reason: str | None = None,
) -> dict[str, Any]:
    """The /v1/diagnose body for one completion.

    `diagnosis` is the taxonomy name of the node the answer resolves to (null when the completion
    has no readable answer or names nothing in the taxonomy); `path` runs from the broadest
    category to that node; `malignancy` is the taxonomy's class of the node, `stated_malignancy`
    what the model wrote; `differentials` are the node's DDx neighbours (knowledge base, then
    taxonomy); `differentials_of` maps a node id to those neighbour ids.
    """
    parsed = parse_completion(completion)
    node_id, resolution = resolve_answer(parsed, taxonomy, mode, options)
    if node_id is not None:
        diagnosis = taxonomy.node(node_id).name
        path = taxonomy.path_names(node_id)
        malignancy = taxonomy.malignancy(node_id)
        differentials = [taxonomy.node(n).name for n in differentials_of(node_id) if n in taxonomy]
    else:
        diagnosis, path, malignancy, differentials = None, [], None, []
    return {
        "diagnosis": diagnosis,
        "node_id": node_id,
        "path": path,
        "malignancy": malignancy,
        "differentials": differentials,
        "reasoning": parsed.reasoning.strip() or None,
        "model": model,
        "policy_version": policy_version,
        "answer": parsed.answer_text or None,
        "stated_malignancy": parsed.stated_malignancy,
        "format_ok": parsed.format_ok,
        "format_reason": parsed.format_reason,
        "resolution": resolution,
        "mode": mode,
        "options": [o.to_dict() for o in options],
        "completion": completion,
        "finish_reason": finish_reason,
    }


def error_body(status: int, message: str) -> dict[str, Any]:
    """OpenAI-style error object, so OpenAI clients surface the message."""
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "server_error"), "code": status}}
