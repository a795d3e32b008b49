"""The scripted Anthropic stand-in on its own, over real HTTP (no CLI)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from .server import ScriptedAnthropicStandIn

TOOLS = [{"name": "Bash", "description": "run", "input_schema": {"type": "object"}}]


@pytest.fixture
def client(standin: ScriptedAnthropicStandIn) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=standin.base_url, timeout=10) as c:
        yield c


def sse_events(text: str) -> list[dict]:
    return [json.loads(line[len("data: "):]) for line in text.splitlines() if line.startswith("data: ")]


def test_main_turns_take_the_script_in_order_and_side_requests_do_not(
    standin: ScriptedAnthropicStandIn, client: httpx.Client
) -> None:
    tool_id = standin.reply_tool_use("Bash", {"command": "touch x"}, text="Running it.")
    standin.reply_text("done [SEMO:DONE]")

    side = client.post("/v1/messages", json={
        "model": "m", "tools": [], "messages": [{"role": "user", "content": "name this"}],
        "output_config": {"format": {"type": "json_schema", "schema": {
            "type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}}},
    })
    assert json.loads(side.json()["content"][0]["text"]) == {"title": "Scripted session"}

    first = client.post("/v1/messages?beta=true", json={
        "model": "m", "stream": True, "tools": TOOLS, "messages": [{"role": "user", "content": "go"}]})
    assert first.headers["content-type"].startswith("text/event-stream")
    events = sse_events(first.text)
    assert [e["type"] for e in events][:2] == ["message_start", "content_block_start"]
    tool_start = [e for e in events if e["type"] == "content_block_start"][1]["content_block"]
    assert tool_start == {"type": "tool_use", "id": tool_id, "name": "Bash", "input": {}}
    partial = "".join(e["delta"]["partial_json"] for e in events
                      if e["type"] == "content_block_delta" and e["delta"]["type"] == "input_json_delta")
    assert json.loads(partial) == {"command": "touch x"}
    assert [e for e in events if e["type"] == "message_delta"][0]["delta"]["stop_reason"] == "tool_use"
    assert events[-1]["type"] == "message_stop"

    second = client.post("/v1/messages", json={
        "model": "m", "tools": TOOLS, "messages": [{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": tool_id, "content": "ok"}]}]})
    assert second.json()["content"] == [{"type": "text", "text": "done [SEMO:DONE]"}]

    third = client.post("/v1/messages", json={"model": "m", "tools": TOOLS, "messages": []})
    assert "No scripted reply" in third.json()["content"][0]["text"]  # the default reply

    mains = standin.main_requests()
    assert len(mains) == 3
    assert mains[1].tool_results()[0]["tool_use_id"] == tool_id
    assert [r.kind for r in standin.requests] == ["side", "main", "main", "main"]


def test_errors_repeat_as_scripted_and_other_paths_answer_harmlessly(
    standin: ScriptedAnthropicStandIn, client: httpx.Client
) -> None:
    standin.reply_error(529, "busy", times=2)
    body = {"model": "m", "tools": TOOLS, "messages": []}
    for _ in range(2):
        r = client.post("/v1/messages", json=body)
        assert r.status_code == 529
        assert r.json() == {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
    assert client.post("/v1/messages", json=body).status_code == 200
    assert client.post("/v1/messages/count_tokens", json=body).json()["input_tokens"] >= 1
    assert client.get("/v1/models").json()["data"]
    assert client.head("/api/hello").status_code == 200
    assert "HEAD /api/hello" in standin.paths()


def test_replies_report_their_usage_and_a_matching_reply_waits_for_its_request(
    standin: ScriptedAnthropicStandIn, client: httpx.Client
) -> None:
    standin.reply_text("for the subagent", usage={"input_tokens": 7, "output_tokens": 3},
                       match=lambda body: "sub task" in json.dumps(body["messages"]))
    standin.reply_text("for the main turn", model="claude-other-1",
                       usage={"input_tokens": 100, "output_tokens": 42,
                              "cache_read_input_tokens": 5, "cache_creation_input_tokens": 6})

    main = client.post("/v1/messages", json={
        "model": "m", "stream": True, "tools": TOOLS, "messages": [{"role": "user", "content": "go"}]})
    events = sse_events(main.text)
    start = events[0]["message"]
    assert start["model"] == "claude-other-1"
    assert start["usage"] == {"input_tokens": 100, "output_tokens": 1, "cache_read_input_tokens": 5,
                              "cache_creation_input_tokens": 6}, "input side first, as the API does"
    assert [e for e in events if e["type"] == "message_delta"][0]["usage"] == {"output_tokens": 42}
    assert "for the main turn" in main.text, "the matching reply waited; the next one answered"

    sub = client.post("/v1/messages", json={
        "model": "m", "tools": TOOLS, "messages": [{"role": "user", "content": "sub task"}]}).json()
    assert sub["content"][0]["text"] == "for the subagent"
    assert sub["usage"] == {"input_tokens": 7, "output_tokens": 3, "cache_read_input_tokens": 0,
                            "cache_creation_input_tokens": 0}
    assert sub["id"] != start["id"], "every reply has its own message id"
    assert standin.pending() == 0
