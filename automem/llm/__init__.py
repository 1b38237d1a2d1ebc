"""One async LLM client for SGLang servers, OpenAI-compatible APIs and the local JAX engine.

    client = make_client(config.llm)
    async with client:
      results = await client.generate([LLMRequest(messages=[...], max_new_tokens=64)])
    client.usage.summary()   # calls, tokens, cached tokens, latency percentiles, errors

Tool calling (OpenAI-compatible APIs, SGLang with a tool-call parser, Anthropic's
Messages API): `LLMRequest(messages=..., tools=[ToolSpec(...)])` -> `result.tool_calls`
(`ToolCall`); results go back as `{"role": "tool", "tool_call_id": ..., "content": ...}`.

A failed request comes back as an `LLMResult` with `error`/`error_cause` set;
`generate` never raises for it.
"""

from automem.llm.anthropic_backend import AnthropicClient
from automem.llm.client import LLMClient
from automem.llm.config import default_llm_config, make_client
from automem.llm.endpoints import MultiEndpointClient
from automem.llm.local import BatchingEngine, LocalClient
from automem.llm.openai_backend import OpenAIClient
from automem.llm.retry import LLMCallError, LLMServerUnavailable, RetryPolicy
from automem.llm.sglang_backend import SGLangClient
from automem.llm.types import ERROR_CAUSES, Grammar, LLMRequest, LLMResult, ToolCall, ToolSpec
from automem.llm.usage import UsageTracker

__all__ = [
    "ERROR_CAUSES",
    "AnthropicClient",
    "BatchingEngine",
    "Grammar",
    "LLMCallError",
    "LLMClient",
    "LLMRequest",
    "LLMResult",
    "LLMServerUnavailable",
    "LocalClient",
    "MultiEndpointClient",
    "OpenAIClient",
    "RetryPolicy",
    "SGLangClient",
    "ToolCall",
    "ToolSpec",
    "UsageTracker",
    "default_llm_config",
    "make_client",
]
