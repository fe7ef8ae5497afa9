"""Cron schedules: start an agent run on every slot of a cron expression, durably.

A schedule is itself an agent, of the built-in type `agentstream.Cron`, so it gets every
guarantee agents have without a mechanism of its own: its next slot is a durable timer
(it survives restarts and rebalances and fires once), and each slot starts one child
agent whose ID names the slot (`<schedule id>@<slot, UTC>`), so a slot is started once
even when its turn is applied again after a crash. `agentstream schedule TYPE --cron
EXPR` and `AgentClient.schedule_cron` create one; cancelling the schedule's agent stops it
(the runs it started go on). The expression is croniter's: five fields, or six with
seconds last; slots are computed in `timezone` (an IANA name, UTC by default).

Slots that passed while no processor could fire them (all down for longer than a slot) are
not started late one after the other: the latest one is, and the others are counted in
the schedule's `missed` field.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import BaseModel, ConfigDict, JsonValue, ValidationError, field_validator

from ._agent import agent

CRON_TYPE = "agentstream.Cron"
RECENT = 10  # child IDs the schedule's state lists


class CronSpec(BaseModel):
    """A schedule: what to start, and when."""

    model_config = ConfigDict(extra="forbid")

    agent_type: str
    cron: str
    input: JsonValue = None
    timezone: str = "UTC"
    after: datetime | None = None  # where a continued schedule resumes (set by the schedule itself)

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        if not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a cron expression (five fields, e.g. '*/5 * * * *', or six with "
                             "seconds last)")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name, e.g. 'Europe/Paris')") from None
        return value


def next_slot(spec: CronSpec, after: datetime) -> datetime:
    """The first slot of `spec` strictly after `after`, in UTC."""
    local = after.astimezone(ZoneInfo(spec.timezone))
    found: datetime = croniter(spec.cron, local).get_next(datetime)
    return found.astimezone(timezone.utc)


def slot_id(schedule_id: str, slot: datetime) -> str:
    return f"{schedule_id}@{slot.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}"


@agent.defn(name=CRON_TYPE)
class Cron:
    """Starts `agent_type` with `input` on every slot of `cron` (see the module's docstring)."""

    def __init__(self) -> None:
        self.agent_type = ""
        self.cron = ""
        self.next_slot: str | None = None
        self.started = 0
        self.missed = 0
        self.recent: list[str] = []  # the latest children it started

    @agent.run
    async def run(self, spec: CronSpec) -> None:
        self.agent_type, self.cron = spec.agent_type, spec.cron
        schedule_id = agent.agent_info().agent_id
        after = spec.after or agent.now()
        while True:
            slot = next_slot(spec, after)
            self.next_slot = slot.isoformat()
            await agent.sleep(max(slot - agent.now(), timedelta(0)))
            later = next_slot(spec, slot)
            while later <= agent.now():  # slots passed while nobody could fire them: the latest one runs
                self.missed += 1
                slot, later = later, next_slot(spec, later)
            child = slot_id(schedule_id, slot)
            await agent.child_start(spec.agent_type, child, spec.input)
            self.started += 1
            self.recent = [*self.recent, child][-RECENT:]
            after = slot
            if agent.should_continue_as_new():
                agent.agent_continue_as_new(spec.model_copy(update={"after": after}).model_dump(mode="json"))


def cron_input(agent_type: str, cron: str, input: Any = None, tz: str = "UTC") -> dict[str, Any]:
    """The validated input of a schedule; a ValueError says what is wrong with it."""
    try:
        return CronSpec(agent_type=agent_type, cron=cron, input=input, timezone=tz).model_dump(mode="json")
    except ValidationError as exc:
        raise ValueError("; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())) from None
