"""The airline customer-service agent of Restate's agent example, as an agentstream LLM agent.

One conversation is one agent (a session): schedule `Airline` with the conversation's
ID and send it `message` events. The agent asks for the booking's confirmation number
first, then looks the booking up, changes seats, and e-mails invoices, the last only
after a human approves (an `approve` / `reject` event naming the request).

Run it with `agentstream dev --app examples.airline`, or end to end with
`agentstream demo --llm`. The model is `AGENTSTREAM_LLM_MODEL` (default gpt-4o-mini) at
OpenAI (`OPENAI_API_KEY`) or at any OpenAI-compatible `AGENTSTREAM_LLM_BASE_URL`.
"""

from __future__ import annotations

import os
import re
from typing import Any

from agentstream.agents import StepContext
from agentstream.agents.llm import HistoryPolicy, LLMAgent, Model, tool

# The airline's booking system. The tools run on workers, so this table lives in the
# worker process: a stand-in for the real system's API.
BOOKINGS: dict[str, dict[str, str]] = {
    "AB4568": {"passenger": "Ada Lovelace", "email": "ada@example.com", "flight": "AS123",
               "route": "SFO -> JFK", "date": "2026-12-03", "seat": "14C"},
    "CD5666": {"passenger": "Alan Turing", "email": "alan@example.com", "flight": "AS456",
               "route": "LHR -> SFO", "date": "2026-12-10", "seat": "31A"},
}
SEAT = re.compile(r"^\d{1,2}[A-F]$")


def _booking(confirmation: str) -> dict[str, str]:
    booking = BOOKINGS.get(confirmation.strip().upper())
    if booking is None:
        raise LookupError(f"there is no booking with confirmation number {confirmation!r}")
    return booking


@tool
def lookup_booking(confirmation: str) -> dict[str, str]:
    """Look up a booking: passenger, flight, route, date and seat.

    Args:
        confirmation: The booking's confirmation number, e.g. "AB4568".
    """
    return {"confirmation": confirmation.strip().upper(), **_booking(confirmation)}


@tool
def change_seat(confirmation: str, seat: str) -> dict[str, str]:
    """Move the passenger of a booking to another seat.

    Args:
        confirmation: The booking's confirmation number.
        seat: The new seat: row and letter, e.g. "10B".
    """
    booking = _booking(confirmation)
    seat = seat.strip().upper()
    if not SEAT.match(seat):
        raise ValueError(f"{seat!r} is not a seat on this aircraft (rows 1-40, seats A-F)")
    booking["seat"] = seat
    return {"confirmation": confirmation.strip().upper(), "flight": booking["flight"], "seat": seat}


@tool(needs_approval=True, approval_timeout=24 * 3600)
def send_invoice(confirmation: str, email: str, context: StepContext) -> dict[str, Any]:
    """E-mail the invoice of a booking. A human approves every invoice before it is sent.

    Args:
        confirmation: The booking's confirmation number.
        email: Where to send the invoice.
    """
    _booking(confirmation)
    # A real mailer would take the key as its idempotency key: a retried attempt sends nothing twice.
    return {"sent_to": email, "invoice": f"INV-{confirmation.strip().upper()}", "key": context.idempotency_key}


INSTRUCTIONS = """You are the customer-service agent of an airline. You can look up bookings, \
change seats and e-mail invoices.
Before you do anything for a customer, ask for their booking's confirmation number unless they \
gave it; never guess one. Look the booking up before you change it. Keep answers short and friendly."""

AIRLINE = LLMAgent(
    "Airline",
    model=Model(name=os.environ.get("AGENTSTREAM_LLM_MODEL", "gpt-4o-mini")),
    instructions=INSTRUCTIONS,
    tools=[lookup_booking, change_seat, send_invoice],
    history=HistoryPolicy(max_messages=40),
)
