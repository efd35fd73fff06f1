"""The API's bodies as typed models (pydantic), from which the OpenAPI schema is made.

Responses (:class:`Health`, :class:`BatchCreated`, :class:`BatchView`,
:class:`BatchList`) are what the routes return. The request bodies
(:class:`BatchSubmission`, :class:`RunRequest`) only document the JSON a client
sends: the routes read bodies themselves (JSON or JSONL, integers of any size, a
message naming each problem), see :mod:`pocketbatch.server._bodies`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

__all__ = (
    "BatchCreated",
    "BatchList",
    "BatchSubmission",
    "BatchView",
    "Health",
    "RunRequest",
    "StorageProblemView",
    "UsageView",
    "inline_schema",
    "request_body",
)


class Health(BaseModel):
    """``GET /health``."""

    status: str
    version: str


class BatchCreated(BaseModel):
    """``POST /batches``: the new batch's id, and the flow's warnings (keys Stepflow
    ignores, each ``file:line:column: ...``; the batch runs regardless)."""

    batch_id: str
    warnings: list[str] = Field(default_factory=list)


class StorageProblemView(BaseModel):
    """Writes are failing (a full disk): why, how often, since when."""

    message: str
    retries: int = Field(description="failed attempts")
    since: float = Field(description="Unix time")


class UsageView(BaseModel):
    """What a batch's LLM calls spent (summed over its items)."""

    requests: int = 0
    tokens_in: int = Field(default=0, description="prompt tokens, from the replies' usage")
    tokens_out: int = Field(default=0, description="completion tokens")
    rate_limited: int = Field(default=0, description="429 replies")
    retries: int = 0
    cache_hits: int = 0


class BatchView(BaseModel):
    """A batch's status and counts."""

    batch_id: str
    name: str | None
    status: str
    total: int
    done: int
    succeeded: int
    failed: int
    pending: int
    max_concurrent: int
    created: float
    finished: float | None
    usage: UsageView | None = Field(
        default=None,
        description="what its LLM calls spent: live while it runs (in-process and "
        "process executors), stored when it stops; null when nothing was counted",
    )
    running: int = Field(description="inputs running now")
    storage_error: StorageProblemView | None = Field(
        description="writes are failing (a full disk): the batch waits and retries; "
        "null once they succeed"
    )


class BatchList(BaseModel):
    """``GET /batches``: a page of batches, newest first, and how many there are."""

    batches: list[BatchView]
    total: int


class BatchSubmission(BaseModel):
    """``POST /batches`` as JSON (a JSONL body holds ``{flow, max_concurrent}`` on its
    first line and one input on each line after)."""

    flow: str = Field(description="the flow file's text")
    inputs: list[Any] = Field(default_factory=list, description="the inputs")
    inputs_jsonl: str = Field(default="", description="inputs as JSONL")
    max_concurrent: int = Field(default=16, ge=1)


class RunRequest(BaseModel):
    """``POST /runs``: a flow and the one input to run it on."""

    flow: str = Field(description="the flow file's text")
    input: Any = None


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON schema with the models it nests written in place (no ``$ref``).

    Example:
        >>> inline_schema(BatchView)["properties"]["storage_error"]["anyOf"][0]["required"]
        ['message', 'retries', 'since']
    """
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    return dict(resolve(schema))


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """An OpenAPI ``requestBody`` of JSON shaped like ``model`` (for ``openapi_extra``)."""
    return {"required": True, "content": {"application/json": {"schema": inline_schema(model)}}}
