"""Cron schedules (agents/_cron.py), run in the test environment with time skipping: one run per
slot with the slot in its ID, late slots collapsed into the latest, a cancel stops the schedule,
and an expression or time zone it cannot use is refused with the reason."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from agentstream.agents import agent
from agentstream.agents._cron import CRON_TYPE, CronSpec, cron_input, next_slot
from agentstream.agents.testing import AgentTestEnvironment

T0 = datetime(2026, 3, 1, 8, 1, 30, tzinfo=timezone.utc)


@agent.defn(name="CronTest.Report")
class Report:
    def __init__(self) -> None:
        self.at = ""

    @agent.run
    async def run(self, title: str) -> str:
        self.at = agent.now().isoformat()
        return f"{title} at {agent.now():%H:%M}"


def children(env: AgentTestEnvironment, schedule: str) -> list[str]:
    return sorted(a for a in env.records if a.startswith(f"{schedule}@"))


async def test_each_slot_starts_one_run_named_after_it_and_a_cancel_stops_the_schedule() -> None:
    async with AgentTestEnvironment(start=T0) as env:
        await env.schedule(CRON_TYPE, "daily-report", cron_input("CronTest.Report", "*/15 * * * *", "Sales"))
        assert env.state("daily-report")["fields"]["next_slot"] == "2026-03-01T08:15:00+00:00"
        await env.skip(timedelta(hours=1))
        runs = children(env, "daily-report")
        assert runs == ["daily-report@20260301T081500Z", "daily-report@20260301T083000Z",
                        "daily-report@20260301T084500Z", "daily-report@20260301T090000Z"]
        assert [env.record(r).result for r in runs] == ["Sales at 08:15", "Sales at 08:30", "Sales at 08:45",
                                                         "Sales at 09:00"]
        fields = env.state("daily-report")["fields"]
        assert (fields["started"], fields["missed"], fields["recent"][-1]) == (4, 0, runs[-1])

        await env.cancel("daily-report")
        await env.skip(timedelta(hours=1))
        assert children(env, "daily-report") == runs  # stopped
        assert env.state("daily-report")["status"] == "cancelled"


async def test_slots_missed_while_nothing_could_fire_them_start_once_not_one_by_one() -> None:
    async with AgentTestEnvironment(start=T0) as env:
        await env.schedule(CRON_TYPE, "often", cron_input("CronTest.Report", "*/5 * * * *", "Ping"))
        env.now += timedelta(minutes=33)  # as if every processor was down: no timer fired on the way
        await env.skip(0)
        assert children(env, "often") == ["often@20260301T083000Z"]  # the latest slot due, once
        assert env.state("often")["fields"]["missed"] == 5  # 08:05 ... 08:25
        await env.skip(timedelta(minutes=5))
        assert children(env, "often")[-1] == "often@20260301T083500Z"


def test_slots_follow_the_time_zone_and_bad_expressions_are_refused_with_the_reason() -> None:
    paris = CronSpec(agent_type="T", cron="0 9 * * *", timezone="Europe/Paris")
    assert next_slot(paris, datetime(2026, 7, 1, 12, tzinfo=timezone.utc)) == datetime(2026, 7, 2, 7, tzinfo=timezone.utc)
    assert next_slot(paris, datetime(2026, 1, 1, 12, tzinfo=timezone.utc)) == datetime(2026, 1, 2, 8, tzinfo=timezone.utc)
    seconds = CronSpec(agent_type="T", cron="* * * * * */10")
    assert next_slot(seconds, T0) == T0 + timedelta(seconds=10)
    with pytest.raises(ValueError, match="is not a cron expression"):
        cron_input("T", "every five minutes")
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        cron_input("T", "* * * * *", tz="Mars/Olympus")
