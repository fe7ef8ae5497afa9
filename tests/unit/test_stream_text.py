"""`StreamedText`: the text a user should see, assembled from an agent's stream as it was delivered.

The stream is progress, not the record: attempts are retried (the new one says
`superseded`), a worker re-runs an attempt from seq 0, an invalid structured output is
asked again within the attempt, and a reader may be handed the same event twice. Each
test feeds the events a real stream can carry in that situation and checks the text.
"""

from __future__ import annotations

from typing import Any

from agentstream.agents.llm import StreamedText
from agentstream.topics import StreamEvent, StreamItem, stream_cursor

AGENT = "chat-1"
RUN = "run-1"


class Attempt:
    """Writes the events of one (run, step, attempt) with consecutive seqs, like one worker's StreamWriter."""

    def __init__(self, step: str, attempt: int, run: str = RUN) -> None:
        self.step, self.attempt, self.run, self.seq = step, attempt, run, 0

    def event(self, type: Any, data: Any) -> StreamEvent:
        event = StreamEvent(agent_id=AGENT, run_id=self.run, step_id=self.step, attempt=self.attempt,
                            seq=self.seq, type=type, data=data)
        self.seq += 1
        return event

    def deltas(self, *texts: str) -> list[StreamEvent]:
        return [self.event("text_delta", {"text": text}) for text in texts]

    def superseded(self, attempt: int, **data: Any) -> StreamEvent:
        return self.event("superseded", {"attempt": attempt, **data})


class RunEvents:
    """The agent's own run events (no step, no attempt), numbered like the engine's emit commands."""

    def __init__(self, run: str = RUN) -> None:
        self.run, self.seq = run, 0

    def event(self, type: Any, data: Any) -> StreamEvent:
        event = StreamEvent(agent_id=AGENT, run_id=self.run, step_id=None, attempt=None, seq=self.seq, type=type,
                            data=data)
        self.seq += 1
        return event

    def started(self, n: int = 1) -> StreamEvent:
        return self.event("run_started", {"run": n, "input": "hi"})

    def finished(self, n: int = 1, text: str | None = None) -> StreamEvent:
        data: dict[str, Any] = {"run": n, "stop_reason": "done"}
        if text is not None:
            data["text"] = text
        return self.event("run_finished", data)


def fed(*events: StreamEvent | StreamItem | list[StreamEvent]) -> StreamedText:
    streamed = StreamedText()
    for event in events:
        for one in event if isinstance(event, list) else [event]:
            streamed.add(one)
    return streamed


def test_the_deltas_of_one_attempt_are_the_live_text_and_run_finished_gives_the_final_text() -> None:
    runs, call = RunEvents(), Attempt("s1", 1)
    streamed = fed(runs.started(), call.deltas("Hel", "lo", " there"))
    assert streamed.text == "Hello there"
    assert streamed.final is None
    assert [(s.step_id, s.attempt, s.text) for s in streamed.steps] == [("s1", 1, "Hello there")]

    streamed.add(runs.finished(text="Hello there"))
    assert streamed.final == "Hello there" and streamed.text == "Hello there"
    assert streamed.dropped == [] and streamed.superseded == set()


def test_a_later_attempt_saying_superseded_drops_the_earlier_attempts_text() -> None:
    runs, first, second = RunEvents(), Attempt("s1", 1), Attempt("s1", 2)
    streamed = fed(runs.started(), first.deltas("Once upon", " a"), second.superseded(1),
                   second.deltas("Once upon", " a time"), runs.finished(text="Once upon a time"))
    assert [(s.attempt, s.text) for s in streamed.steps] == [(2, "Once upon a time")]
    assert streamed.final == "Once upon a time"
    assert streamed.superseded == {(RUN, "s1", 1)}
    assert [(d.attempt, d.reason, d.text) for d in streamed.dropped] == [(1, "superseded", "Once upon a")]


def test_a_higher_attempt_starting_drops_the_lower_one_and_its_late_events_are_ignored() -> None:
    first, second = Attempt("s1", 1), Attempt("s1", 2)
    streamed = fed(first.deltas("stale"), second.deltas("fresh"))
    assert streamed.superseded == {(RUN, "s1", 1)}
    assert streamed.add(first.deltas(" zombie")[0]) is False  # attempt 1 still running somewhere: ignored
    assert [(s.attempt, s.text) for s in streamed.steps] == [(2, "fresh")]
    assert streamed.text == "fresh"


def test_superseded_naming_the_current_attempt_restarts_its_text_within_the_attempt() -> None:
    call = Attempt("s1", 1)
    streamed = fed(call.deltas('{"title": ', "oops"), call.superseded(1, reason="invalid_output"),
                   call.deltas('{"title": "ok"}'))
    assert [(s.attempt, s.text) for s in streamed.steps] == [(1, '{"title": "ok"}')]
    assert streamed.superseded == {(RUN, "s1", 1)}
    [dropped] = streamed.dropped
    assert (dropped.attempt, dropped.reason, dropped.detail, dropped.text) == (
        1, "superseded", "invalid_output", '{"title": oops'
    )


def test_seq_0_of_the_same_attempt_again_restarts_it_and_the_rerun_counts_in_full() -> None:
    killed, rerun = Attempt("s1", 1), Attempt("s1", 1)  # a worker died; another ran the same attempt
    streamed = fed(killed.deltas("The quick", " brown", " fo"), rerun.deltas("The quick", " brown", " fox."))
    assert [(s.attempt, s.text) for s in streamed.steps] == [(1, "The quick brown fox.")]
    assert [(d.attempt, d.reason, d.text) for d in streamed.dropped] == [(1, "restarted", "The quick brown fo")]
    assert streamed.superseded == set(), "the attempt itself goes on: restarted, not superseded"


def test_events_it_already_has_are_ignored() -> None:
    runs, call = RunEvents(), Attempt("s1", 1)
    events = [runs.started(), *call.deltas("a", "b", "c"), runs.finished(text="abc")]
    streamed = fed(events)
    # Not seq 0: a copy of it after later events is how a re-run attempt starts (next tests).
    again = [events[0], *events[2:]]
    assert [streamed.add(event) for event in again] == [False] * 4
    assert streamed.text == "abc" and streamed.final == "abc"
    assert len(streamed.answers) == 1 and streamed.dropped == []


def test_a_whole_stream_read_again_as_items_changes_nothing() -> None:
    runs, call = RunEvents(), Attempt("s1", 1)
    events = [runs.started(), *call.deltas("a", "b", "c"), runs.finished(text="abc")]
    items = [StreamItem(stream_cursor(0, 100 + offset), event) for offset, event in enumerate(events)]
    streamed = fed(*items)
    assert [streamed.add(item) for item in items] == [False] * len(items)
    assert (streamed.text, streamed.final, len(streamed.answers), streamed.dropped) == ("abc", "abc", 1, [])


def test_a_copy_of_seq_0_alone_is_a_duplicate_not_a_restart() -> None:
    call = Attempt("s1", 1)
    [first] = call.deltas("a")
    streamed = fed(first)
    assert streamed.add(first) is False
    assert streamed.text == "a" and streamed.dropped == []


def test_items_at_an_offset_already_read_are_ignored_even_across_a_restart() -> None:
    killed, rerun = Attempt("s1", 1), Attempt("s1", 1)
    events = killed.deltas("x", "y") + rerun.deltas("x", "y", "z")
    items = [StreamItem(stream_cursor(2, offset), event) for offset, event in enumerate(events)]
    streamed = fed(*items)
    assert streamed.text == "xyz"
    # A reader that reconnected too early hands the rerun's seq 0 again: the cursor says it is old.
    assert streamed.add(items[2]) is False
    assert streamed.text == "xyz"


def test_the_committed_text_of_run_finished_wins_over_the_streamed_text() -> None:
    runs, call = RunEvents(), Attempt("s1", 1)
    streamed = fed(runs.started(), call.deltas("partial"), runs.finished(text="the committed answer"))
    assert streamed.final == "the committed answer" and streamed.text == "the committed answer"


def test_run_finished_without_text_leaves_the_streamed_text_final() -> None:
    runs, call = RunEvents(), Attempt("s1", 1)
    streamed = fed(runs.started(), call.deltas("streamed"), runs.finished())
    assert streamed.final == "streamed"


def test_each_answer_of_a_session_has_its_own_steps_and_final_text() -> None:
    runs = RunEvents()
    first_call, tool_turn, second_call = Attempt("s1", 1), Attempt("s2", 1), Attempt("s3", 1)
    streamed = fed(
        runs.started(1), first_call.deltas("One."), runs.finished(1, "One."),
        runs.started(2), tool_turn.event("tool_call_delta", {"index": 0, "id": "c1", "name": "f", "arguments": "{}"}),
        runs.event("tool_call", {"run": 2, "id": "c1", "name": "f"}), second_call.deltas("Two", "."),
    )
    assert [(a.run, a.final) for a in streamed.answers] == [(1, "One."), (2, None)]
    assert [s.step_id for s in streamed.answers[1].steps] == ["s2", "s3"]
    assert streamed.text == "Two." and streamed.final == "One."
    streamed.add(runs.finished(2, "Two."))
    assert streamed.final == "Two." and [a.text for a in streamed.answers] == ["One.", "Two."]


def test_steps_of_other_runs_are_kept_apart() -> None:
    mine, other = Attempt("s1", 1, run="r1"), Attempt("s1", 2, run="r2")
    streamed = fed(mine.deltas("mine"), other.deltas("other"))
    assert {(s.run_id, s.attempt, s.text) for s in streamed.steps} == {("r1", 1, "mine"), ("r2", 2, "other")}
    assert streamed.superseded == set()


def test_plain_string_deltas_count_as_text() -> None:
    call = Attempt("s1", 1)
    streamed = fed(call.event("text_delta", "a"), call.event("text_delta", "b"))
    assert streamed.text == "ab"


def test_a_fresh_reader_has_no_text() -> None:
    streamed = StreamedText()
    assert (streamed.text, streamed.final, streamed.steps, streamed.answers) == ("", None, [], [])


def test_an_attempt_given_up_before_the_reader_came_is_still_marked_superseded() -> None:
    third = Attempt("s1", 3)
    streamed = fed(third.superseded(2), third.deltas("answer"))
    assert streamed.superseded == {(RUN, "s1", 2)}
    assert [(s.attempt, s.text) for s in streamed.steps] == [(3, "answer")]
