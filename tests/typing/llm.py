"""User-style code that mypy --strict must accept: instrumenting keeps the client's type."""

from __future__ import annotations

import anthropic
import openai
from typing_extensions import assert_type

import taskscope

client = taskscope.instrument_openai(openai.OpenAI(api_key="sk-test"))
assert_type(client, openai.OpenAI)
assert_type(taskscope.instrument_openai(openai.AsyncOpenAI(api_key="sk-test")), openai.AsyncOpenAI)
assert_type(taskscope.instrument_openai(), None)
assert_type(taskscope.instrument_openai(capture_input=False), None)
claude = taskscope.instrument_anthropic(anthropic.Anthropic(api_key="k"), capture_output=False)
assert_type(claude, anthropic.Anthropic)
assert_type(taskscope.instrument_anthropic(), None)
taskscope.uninstrument_openai()
taskscope.uninstrument_openai(client)
taskscope.uninstrument_anthropic(claude)
