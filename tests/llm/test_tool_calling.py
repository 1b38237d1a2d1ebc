"""Tool calling over real HTTP on 127.0.0.1: OpenAI-compatible chat and Anthropic's Messages API.

The server scripts the assistant's tool calls (a Claude/GPT endpoint cannot run
here) and checks both protocols as the real APIs do; the Messages API's plain
text path is served by the tiny model's engine.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from automem.llm import Grammar, LLMRequest, ToolCall, ToolSpec, default_llm_config, make_client

pytestmark = pytest.mark.timeout(300)

LOOKUP = ToolSpec("lookup", "Look a word up.", {
    "type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]})
DONE = ToolSpec("done", "Finish.", {"type": "object", "properties": {}})


def client_for(server, api: str, **over):
  c = default_llm_config(api)
  c.base_url = server.url + "/v1"
  c.api_key = "k"
  c.max_retries = 0
  c.timeout_s = 20.0
  for k, v in over.items():
    c[k] = v
  return make_client(c)


def run(client, requests):
  async def go():
    try:
      return await client.generate(requests)
    finally:
      await client.close()
  return asyncio.run(go())


@pytest.fixture
def server(make_server):
  return make_server(api_key="k")


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_tool_call_round_trip(server, api):
  server.script({"content": "Let me check.", "tool_calls": [
      {"name": "lookup", "arguments": {"word": "tree"}},
      {"name": "lookup", "arguments": {"word": "stone"}}]},
      lambda body: {"content": "found: " + json.dumps(body["messages"][-1]["content"])[:400],
                    "tool_calls": [{"name": "done", "arguments": {}}]})
  client = client_for(server, api)
  msgs = [{"role": "system", "content": "You are a reviewer."},
          {"role": "user", "content": "Check two words."}]
  (first,) = run(client, [LLMRequest(messages=msgs, tools=[LOOKUP, DONE], max_new_tokens=64)])
  assert first.ok, first.error
  assert first.finish_reason == "tool_calls" and first.text == "Let me check."
  assert [(c.name, c.arguments) for c in first.tool_calls] == [
      ("lookup", {"word": "tree"}), ("lookup", {"word": "stone"})]
  assert first.prompt_tokens > 0 and first.completion_tokens > 0
  path, body = server.requests[-1]
  if api == "openai":
    assert path == "/v1/chat/completions"
    assert body["tools"][0] == {"type": "function", "function": {
        "name": "lookup", "description": "Look a word up.", "parameters": LOOKUP.parameters}}
  else:
    assert path == "/v1/messages" and body["system"] == "You are a reviewer."
    assert body["tools"][0]["input_schema"] == LOOKUP.parameters
  # The results go back as role "tool" messages, one per call.
  msgs += [{"role": "assistant", "content": first.text,
            "tool_calls": [c.to_message() for c in first.tool_calls]},
           {"role": "tool", "tool_call_id": first.tool_calls[0].id, "content": "a plant"},
           {"role": "tool", "tool_call_id": first.tool_calls[1].id, "content": "a rock"}]
  (second,) = run(client, [LLMRequest(messages=msgs, tools=[LOOKUP, DONE], max_new_tokens=64,
                                      tool_choice="done")])
  assert second.ok, second.error
  assert [c.name for c in second.tool_calls] == ["done"]
  _, body = server.requests[-1]
  if api == "anthropic":
    # Both results in one user turn of tool_result blocks, right after the tool_use turn.
    assert [b["type"] for b in body["messages"][1]["content"]] == ["text", "tool_use", "tool_use"]
    assert [b["content"] for b in body["messages"][2]["content"]] == ["a plant", "a rock"]
    assert body["tool_choice"] == {"type": "tool", "name": "done"}
    assert "a rock" in second.text
  else:
    assert body["tool_choice"] == {"type": "function", "function": {"name": "done"}}
    assert body["messages"][-1] == {"role": "tool", "tool_call_id": first.tool_calls[1].id,
                                    "content": "a rock"}


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_unanswered_tool_call_is_rejected_like_the_real_api(server, api):
  msgs = [{"role": "user", "content": "hi"},
          {"role": "assistant", "content": "", "tool_calls": [
              ToolCall("call_1", "lookup", {"word": "x"}).to_message()]},
          {"role": "user", "content": "and?"}]
  server.script({"content": "never sent"})
  (res,) = run(client_for(server, api), [LLMRequest(messages=msgs, tools=[LOOKUP])])
  assert not res.ok and res.error_cause == "client_error"
  assert "tool" in res.error and server.scripted_left == 1


def test_bad_tool_arguments_are_reported_not_raised():
  bad = ToolCall.parse("c1", "lookup", '{"word": ')
  assert bad.error and bad.arguments == {} and bad.raw_arguments == '{"word": '
  assert ToolCall.parse("c2", "lookup", "[1]").error == "arguments must be a JSON object"
  assert ToolCall.parse("c3", "lookup", {"word": "x"}).arguments == {"word": "x"}
  with pytest.raises(ValueError, match="tool_choice"):
    LLMRequest(messages=[{"role": "user", "content": "x"}], tools=[LOOKUP], tool_choice="nope")
  with pytest.raises(ValueError, match="chat request"):
    LLMRequest(prompt="x", tools=[LOOKUP])


def test_anthropic_json_schema_is_a_forced_tool_and_needs_its_key(server):
  schema = {"type": "object", "properties": {"note": {"type": "string"}}, "required": ["note"]}
  server.script({"tool_calls": [{"name": "output", "arguments": {"note": "ok"}}]})
  (res,) = run(client_for(server, "anthropic"), [LLMRequest(
      messages=[{"role": "user", "content": "Answer."}],
      grammar=Grammar("json_schema", json.dumps(schema)))])
  assert res.ok and json.loads(res.text) == {"note": "ok"} and not res.tool_calls
  _, body = server.requests[-1]
  assert body["tool_choice"] == {"type": "tool", "name": "output"}
  (denied,) = run(client_for(server, "anthropic", api_key="wrong"),
                  [LLMRequest(messages=[{"role": "user", "content": "x"}])])
  assert denied.error_cause == "client_error" and "401" in denied.error


def test_anthropic_text_reply_from_the_engine(llm_server):
  c = default_llm_config("anthropic")
  c.base_url, c.api_key, c.max_retries = llm_server.url + "/v1", "unused", 0
  (res,) = run(make_client(c), [LLMRequest(
      messages=[{"role": "system", "content": "You play Crafter."},
                {"role": "user", "content": "A tree is north."}], max_new_tokens=3,
      temperature=0.0)])
  assert res.ok, res.error
  assert res.finish_reason in ("stop", "length") and res.completion_tokens > 0
  assert llm_server.requests[-1][0] == "/v1/messages"


def test_backends_without_tool_calling_refuse_tools(llm_stack):
  from automem.llm import LocalClient

  engine, tok, params = llm_stack
  client = LocalClient(engine, tok, sampling_params_cls=params)
  plain = LLMRequest(messages=[{"role": "user", "content": "hi"}], max_new_tokens=2)
  tooled = LLMRequest(messages=[{"role": "user", "content": "hi"}], tools=[LOOKUP])
  with_tools, without = run(client, [tooled, plain])
  assert with_tools.error_cause == "unsupported" and "tool calling" in with_tools.error
  assert without.ok
  assert client.usage.summary()["calls"] == 2


def test_sglang_sends_tool_requests_to_its_chat_endpoint(server, tiny_tokenizer):
  """With a local tokenizer plain chats go to /generate; tool requests need the server's
  tool-call parser on /v1/chat/completions."""
  c = default_llm_config("sglang")
  c.base_url, c.api_key, c.max_retries = server.url, "k", 0
  server.script({"tool_calls": [{"name": "lookup", "arguments": {"word": "x"}}]})
  (res,) = run(make_client(c, tokenizer=tiny_tokenizer), [LLMRequest(
      messages=[{"role": "user", "content": "hi"}], tools=[LOOKUP])])
  assert res.ok and res.tool_calls[0].arguments == {"word": "x"}
  assert server.requests[-1][0] == "/v1/chat/completions"
