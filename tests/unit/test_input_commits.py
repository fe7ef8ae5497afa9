"""The processor's own commit bookkeeping: one past the last input done, per owned partition."""

from __future__ import annotations

from agentstream.streams.processor.commits import InputCommits


class Broker:
    def __init__(self, accepts: bool = True) -> None:
        self.accepts = accepts
        self.commits: list[dict[str, int]] = []

    async def send(self, offsets: dict[str, int]) -> bool:
        self.commits.append(dict(offsets))
        return self.accepts


async def test_a_partition_is_committed_one_past_its_last_input_done() -> None:
    commits: InputCommits[str] = InputCommits()
    broker = Broker()
    commits.done("p0", 3)
    commits.done("p0", 4)
    commits.done("p1", 10)
    await commits.commit({"p0", "p1"}, broker.send)
    assert broker.commits == [{"p0": 5, "p1": 11}]


async def test_inputs_read_again_by_the_processor_never_hold_a_partition_back() -> None:
    # The stall this replaces: Faust's stream never acked the inputs the processor read again
    # itself (positions.read_range), and Faust would not commit past the hole, ever.
    commits: InputCommits[str] = InputCommits()
    broker = Broker()
    commits.done("p0", 10)  # 3..9 were read again and handled before it
    await commits.commit({"p0"}, broker.send)
    assert broker.commits == [{"p0": 11}]


async def test_nothing_is_sent_when_nothing_moved_and_a_refused_commit_is_sent_again() -> None:
    commits: InputCommits[str] = InputCommits()
    refusing = Broker(accepts=False)
    commits.done("p0", 1)
    await commits.commit({"p0"}, refusing.send)  # e.g. a rebalance under way
    accepting = Broker()
    await commits.commit({"p0"}, accepting.send)
    await commits.commit({"p0"}, accepting.send)
    assert refusing.commits == [{"p0": 2}] and accepting.commits == [{"p0": 2}]


async def test_an_input_redelivered_after_a_rebalance_never_moves_the_commit_back() -> None:
    commits: InputCommits[str] = InputCommits()
    broker = Broker()
    commits.done("p0", 20)
    commits.done("p0", 15)
    await commits.commit({"p0"}, broker.send)
    assert broker.commits == [{"p0": 21}]


async def test_only_owned_partitions_are_committed_and_revoked_ones_are_forgotten() -> None:
    commits: InputCommits[str] = InputCommits()
    broker = Broker()
    commits.done("p0", 5)
    commits.done("p1", 5)
    await commits.commit({"p0"}, broker.send)
    commits.revoked({"p0", "p1"})
    await commits.commit({"p0", "p1"}, broker.send)
    commits.done("p1", 2)  # owned again: it starts from the group's commit, whatever this processor knew
    await commits.commit({"p0", "p1"}, broker.send)
    assert broker.commits == [{"p0": 6}, {"p1": 3}]


async def test_a_partition_with_a_lost_input_commits_nothing_further_until_reassigned() -> None:
    commits: InputCommits[str] = InputCommits()
    broker = Broker()
    commits.done("p0", 1)
    commits.lost("p0")
    commits.done("p0", 2)  # later inputs are durable, but the lost one must be redelivered
    commits.done("p1", 1)
    await commits.commit({"p0", "p1"}, broker.send)
    commits.revoked({"p0"})
    commits.done("p0", 2)
    await commits.commit({"p0", "p1"}, broker.send)
    assert broker.commits == [{"p1": 2}, {"p0": 3}]
