"""Agno's structured-output reviewer: the answer is a validated `MovieReview`, not prose.

`output=MovieReview` sends the type's JSON schema to the model as a strict response
format; the worker validates the answer (asking again within the same step when it is
invalid) and the typed value is what the run returns, in `RunResult.output`:

    result = await client.get_agent_result(await ..., timeout=60)
    review = REVIEWER.parse(result["output"])          # a MovieReview

Schedule it with the movie as the task: `client.schedule_agent("MovieReviewer",
input="Review the movie Inception")`.
"""

from __future__ import annotations

import os

from pydantic import BaseModel, Field, field_validator

from agentstream.agents.llm import LLMAgent, Model


class MovieReview(BaseModel):
    """A short review. At module level: the worker imports it by name to validate answers."""

    title: str = Field(description="The movie's title.")
    rating: int = Field(description="From 1 (awful) to 10 (a masterpiece).")
    summary: str = Field(description="Two or three sentences: what works and what does not.")

    @field_validator("rating")
    @classmethod
    def _on_the_scale(cls, rating: int) -> int:
        if not 1 <= rating <= 10:
            raise ValueError("the rating goes from 1 to 10")
        return rating


INSTRUCTIONS = "You are a film critic. Review the movie you are given: fair, specific and brief."

REVIEWER = LLMAgent(
    "MovieReviewer",
    model=Model(name=os.environ.get("AGENTSTREAM_LLM_MODEL", "gpt-4o-mini")),
    instructions=INSTRUCTIONS,
    output=MovieReview,
)
