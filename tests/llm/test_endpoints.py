"""Several SGLang servers behind one client: requests spread over the live ones, dead ones out.

Three SGLang-protocol servers on 127.0.0.1 (the scripted engine answers): one
is down at start-up, one dies mid-run (its connections dropped, as a crash
would). No request fails while a live server remains.
"""

from __future__ import annotations

import asyncio

import pytest

from automem.llm import LLMRequest, LLMServerUnavailable, default_llm_config, make_client
from automem.llm.endpoints import MultiEndpointClient
from automem.models import SamplingParams
from tests.support.llm_server import LLMTestServer, free_port
from tests.support.scripted_engine import PromptHashEngine


def requests(n: int, tag: str) -> list[LLMRequest]:
  return [LLMRequest(messages=[{"role": "user", "content": f"{tag} {i}"}], max_new_tokens=8,
                     request_id=f"{tag}/{i}") for i in range(n)]


def config(urls: list[str]):
  c = default_llm_config("sglang")
  c.sglang.endpoints = ",".join(urls)
  c.sglang.wait_ready_s = 0.5
  c.max_retries = 1
  c.backoff_base_s = 0.01
  return c


def generate_posts(server: LLMTestServer) -> int:
  return sum(path == "/v1/chat/completions" for path, _ in server.requests)


def test_requests_spread_over_endpoints_and_a_dead_one_is_taken_out(tiny_tokenizer):
  engine = PromptHashEngine(tiny_tokenizer, delay_s=0.01)
  with LLMTestServer(engine, tiny_tokenizer, SamplingParams) as a, \
       LLMTestServer(engine, tiny_tokenizer, SamplingParams) as b:
    down = f"http://127.0.0.1:{free_port()}"
    client = make_client(config([a.url, down, b.url]))
    assert isinstance(client, MultiEndpointClient)

    async def run():
      async with client:
        assert client.live() == [0, 2]  # the server that was down at start-up is out
        first = await client.generate(requests(8, "spread"))
        counts = generate_posts(a), generate_posts(b)
        b.kill()
        second = await client.generate(requests(6, "after"))
        return first, counts, second

    first, counts, second = asyncio.run(run())
    assert all(r.ok for r in first + second), [r.error for r in first + second]
    assert counts[0] >= 2 and counts[1] >= 2 and sum(counts) == 8  # both served a share
    assert client.live() == [0]  # the dead one is out; everything went to the survivor
    assert generate_posts(a) == counts[0] + 6
    # Same answers as one server gives: the endpoints serve the same model.
    single = make_client(config([a.url]))
    again = single.generate_sync(requests(8, "spread"))
    assert [r.text for r in again] == [r.text for r in first]


def test_no_live_endpoint_fails_start_up_clearly():
  client = make_client(config([f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]))
  with pytest.raises(LLMServerUnavailable, match="no LLM endpoint is up"):
    asyncio.run(client.start())
  with pytest.raises(ValueError, match="at least one endpoint"):
    MultiEndpointClient([])
