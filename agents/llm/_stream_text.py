"""`StreamedText`: the text a user should see, assembled from an agent's resumed stream.

`agent-stream` is progress, not the record of what happened, so a chat front end cannot
just concatenate every `text_delta`. Four things happen on a real stream:

- a model call fails mid-answer (a 429, a cut connection) and its step runs again as a
  new attempt, which first says `superseded` {"attempt": k}: attempt k's text is void;
- a worker dies inside an attempt and another worker runs the *same* attempt again: its
  events start again at seq 0 (with the same message IDs as the first run's);
- an invalid structured output is asked again within the attempt: `superseded` names
  the current attempt, and only what follows counts;
- a reader is handed an event it already has (a resent copy, an overlapping read).

Feed a `StreamedText` the events (or the `StreamItem`s, whose cursors make duplicates
certain) in the order the stream delivered them; it keeps the text of the current
attempt of every model-call step, per answer of the agent (`run_started` ...
`run_finished`), and says what it dropped and why. When an answer finishes, the text
committed in `run_finished` is authoritative: the stream only ever previewed it.

    streamed = StreamedText()
    async for item in client.stream(agent_id, after=cursor):
        streamed.add(item)
        show(streamed.text)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from agentstream.topics import StreamEvent, StreamItem, parse_stream_cursor

DropReason = Literal["superseded", "restarted"]

Position = tuple[str, str]  # run_id, step_id


@dataclass(frozen=True)
class StepText:
    """The text of a model-call step as the user should see it: that of its current attempt."""

    run_id: str
    step_id: str
    attempt: int
    text: str


@dataclass(frozen=True)
class DroppedText:
    """Partial output the stream took back.

    `reason` "superseded": the step gave the attempt's output up (a later attempt
    replaced it, or with `detail` "invalid_output" the answer was asked again within the
    attempt); "restarted": a worker ran the same attempt again from its start.
    """

    run_id: str
    step_id: str
    attempt: int
    reason: DropReason
    text: str
    detail: str | None = None


@dataclass
class _Step:
    """What is held of one step: its current attempt, that attempt's text and the message IDs it holds."""

    run_id: str
    step_id: str
    attempt: int
    text: list[str] = field(default_factory=list)
    held: set[str] = field(default_factory=set)
    top_seq: int = -1

    def view(self) -> StepText:
        return StepText(self.run_id, self.step_id, self.attempt, "".join(self.text))

    def reset(self, attempt: int) -> str:
        """Start over (as `attempt`); the text given up."""
        dropped = "".join(self.text)
        self.attempt, self.text, self.held, self.top_seq = attempt, [], set(), -1
        return dropped


@dataclass
class AnswerText:
    """One answer of the agent: one run of its loop (a message answered, or its task).

    `run` is the loop's run number from `run_started` / `run_finished` (None when the
    reader started after `run_started`); `final` is the committed text once finished.
    """

    run_id: str
    run: int | None
    _steps: list[_Step] = field(default_factory=list, repr=False)
    final: str | None = None
    finished: bool = False

    @property
    def steps(self) -> list[StepText]:
        """The model-call steps of this answer, in the order they first streamed."""
        return [step.view() for step in self._steps]

    @property
    def live(self) -> str:
        """The streamed text of the latest step that streamed any text."""
        for step in reversed(self._steps):
            if step.text:
                return "".join(step.text)
        return ""

    @property
    def text(self) -> str:
        """What the user should see: the committed text once finished, else the live text."""
        return self.final if self.final is not None else self.live


class StreamedText:
    """Assembles the user-visible text from one agent's stream events, fed in stream order."""

    def __init__(self) -> None:
        self.answers: list[AnswerText] = []
        self.dropped: list[DroppedText] = []
        self._steps: dict[Position, _Step] = {}
        self._open: dict[str, AnswerText] = {}  # run_id -> its answer still streaming
        self._run_events: set[str] = set()  # message IDs of run events already applied
        self._offsets: dict[int, int] = {}  # partition -> highest offset read (items only)
        self._superseded: set[tuple[str, str, int]] = set()

    # -- what a front end reads -------------------------------------------------------------

    @property
    def steps(self) -> list[StepText]:
        """Every model-call step seen, with the text of its current attempt, in order of appearance."""
        return [step for answer in self.answers for step in answer.steps]

    @property
    def text(self) -> str:
        """The latest answer's text: committed once it finished, else as streamed so far ("" before any)."""
        return self.answers[-1].text if self.answers else ""

    @property
    def final(self) -> str | None:
        """The text of the latest finished answer (committed in `run_finished`), None before one finished."""
        for answer in reversed(self.answers):
            if answer.finished:
                return answer.text
        return None

    @property
    def superseded(self) -> set[tuple[str, str, int]]:
        """(run_id, step_id, attempt) of every attempt whose output the step gave up."""
        return set(self._superseded)

    # -- feeding ----------------------------------------------------------------------------

    def add(self, item: StreamEvent | StreamItem) -> bool:
        """Take the next event; False when it changed nothing (already had, or of an abandoned attempt).

        A re-run attempt's events carry the same message IDs as the first run's, so a bare
        event with seq 0 seen again after later events of its attempt is taken as a
        re-run; a `StreamItem` read before (its cursor) is known to be a copy.
        """
        if isinstance(item, StreamItem):
            partition, offset = parse_stream_cursor(item.cursor)
            if offset <= self._offsets.get(partition, -1):
                return False
            self._offsets[partition] = offset
            event = item.event
        else:
            event = item
        if event.step_id is None or event.attempt is None:
            return self._run_event(event)
        return self._step_event(event, event.step_id, event.attempt)

    def _answer(self, run_id: str) -> AnswerText:
        answer = self._open.get(run_id)
        if answer is None:
            answer = self._open[run_id] = AnswerText(run_id, None)
            self.answers.append(answer)
        return answer

    def _run_event(self, event: StreamEvent) -> bool:
        if event.message_id in self._run_events:
            return False
        self._run_events.add(event.message_id)
        data = event.data if isinstance(event.data, dict) else {}
        run = data.get("run")
        number = run if isinstance(run, int) else None
        if event.type == "run_started":
            self._open.pop(event.run_id, None)
            answer = self._answer(event.run_id)
            answer.run = number
        elif event.type == "run_finished":
            answer = self._answer(event.run_id)
            answer.run = answer.run if number is None else number
            text = data.get("text")
            answer.final = text if isinstance(text, str) else answer.live
            answer.finished = True
            del self._open[event.run_id]
        return True

    def _step_event(self, event: StreamEvent, step_id: str, attempt: int) -> bool:
        step = self._steps.get((event.run_id, step_id))
        if step is None:
            step = self._steps[(event.run_id, step_id)] = _Step(event.run_id, step_id, attempt)
            self._answer(event.run_id)._steps.append(step)
        if attempt < step.attempt:
            return False  # an abandoned attempt still running somewhere
        if attempt > step.attempt:
            self._drop(step, attempt, "superseded")
        elif event.message_id in step.held:
            if event.seq != 0 or step.top_seq == 0:
                return False  # a copy of an event it has
            self._drop(step, attempt, "restarted")  # seq 0 again after more: the attempt runs again
        step.held.add(event.message_id)
        step.top_seq = max(step.top_seq, event.seq)
        if event.type == "superseded":
            self._on_superseded(step, event)
        elif event.type == "text_delta":
            step.text.append(_delta_text(event.data))
        return True

    def _on_superseded(self, step: _Step, event: StreamEvent) -> None:
        data = event.data if isinstance(event.data, dict) else {}
        abandoned, reason = data.get("attempt"), data.get("reason")
        detail = reason if isinstance(reason, str) else None
        if abandoned == step.attempt:  # asked again within the attempt: what it streamed so far is void
            dropped = "".join(step.text)
            step.text = []
            self._note(DroppedText(step.run_id, step.step_id, step.attempt, "superseded", dropped, detail))
        elif (isinstance(abandoned, int) and abandoned < step.attempt
              and (step.run_id, step.step_id, abandoned) not in self._superseded):
            # an attempt this reader never saw (it started reading later): note that it was given up
            self._note(DroppedText(step.run_id, step.step_id, abandoned, "superseded", "", detail))

    def _drop(self, step: _Step, attempt: int, reason: DropReason) -> None:
        before = step.attempt
        text = step.reset(attempt)
        self._note(DroppedText(step.run_id, step.step_id, before, reason, text))

    def _note(self, dropped: DroppedText) -> None:
        self.dropped.append(dropped)
        if dropped.reason == "superseded":
            self._superseded.add((dropped.run_id, dropped.step_id, dropped.attempt))


def _delta_text(data: object) -> str:
    if isinstance(data, dict):
        text = data.get("text")
        return text if isinstance(text, str) else ""
    return data if isinstance(data, str) else ""
