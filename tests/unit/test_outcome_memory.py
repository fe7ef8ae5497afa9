"""The processor's memory of what became of client inputs: found by every ID, bounded, and
requests waiting on it are woken by the outcome and leave nothing behind."""

from __future__ import annotations

from agentstream.streams.processor.outcomes import InputOutcomes, input_ids
from agentstream.topics import ScheduleAgent, SendEvent, StepResult, run_id_for


def test_a_schedule_is_known_by_its_message_id_and_its_run_id_an_event_by_its_message_id() -> None:
    schedule = ScheduleAgent(agent_id="a", agent_type="T")
    event = SendEvent(agent_id="a", event="e")
    assert input_ids(schedule) == (schedule.message_id, run_id_for(schedule.message_id))
    assert input_ids(event) == (event.message_id,)
    result = StepResult(agent_id="a", run_id="r", step_id="s1", attempt=1, function="f", ok=True, output=1)
    assert input_ids(result) == ()  # not a client's input: nothing remembered


async def test_an_outcome_wakes_the_requests_waiting_for_any_of_its_ids() -> None:
    outcomes = InputOutcomes()
    with outcomes.waiters.watching("run-1") as by_run, outcomes.waiters.watching("other") as other:
        outcomes.settled(("msg-1", "run-1"), "dead_lettered", "already_running", "agent 'a' is already running")
        assert by_run.done() and not other.done()
    assert outcomes.get("msg-1") == outcomes.get("run-1") == {
        "outcome": "dead_lettered", "reason_code": "already_running", "reason": "agent 'a' is already running"}
    assert outcomes.get("other") is None


async def test_the_memory_keeps_the_newest_outcomes_and_waiters_leave_no_entry() -> None:
    outcomes = InputOutcomes(keep=3)
    for n in range(5):
        outcomes.settled((f"m{n}",), "applied")
    assert len(outcomes) == 3
    assert [outcomes.get(f"m{n}") is not None for n in range(5)] == [False, False, True, True, True]
    with outcomes.waiters.watching("late"):
        pass
    outcomes.settled(("late",), "applied")  # nobody waits any more: no error, nothing left behind
    assert len(outcomes.waiters) == 0
