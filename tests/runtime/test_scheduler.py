"""Scheduler: admission, chunked prefill, decode batching and preemption, on a real BlockManager."""

from __future__ import annotations

import itertools

from runtime.engine.block_manager import BlockManager
from runtime.engine.sampling_params import SamplingParams
from runtime.engine.scheduler import ScheduledBatch, Scheduler
from runtime.engine.sequence import Request, Sequence, SequenceStatus

_ids = itertools.count()


def make_request(num_prompt_tokens: int, num_seqs: int = 1) -> Request:
    prompt = [next(_ids) % 50_000 for _ in range(num_prompt_tokens)]
    seqs = [
        Sequence(seq_id=next(_ids), token_ids=list(prompt), num_prompt_tokens=num_prompt_tokens, index=i)
        for i in range(num_seqs)
    ]
    return Request(request_id=f"r{next(_ids)}", params=SamplingParams(), prompt_token_ids=prompt, seqs=seqs)


def run(scheduler: Scheduler, batch: ScheduledBatch) -> None:
    """Play the engine: commit the fed tokens and append a token to every sequence that is complete."""
    for seq, num_new in zip(batch.seqs, batch.num_new_tokens):
        seq.num_cached += num_new
        scheduler.block_manager.cache_full_blocks(seq)
        if seq.num_uncached == 0:
            seq.append_token(7)


def make_scheduler(num_blocks: int = 64, block_size: int = 4, **limits: int) -> Scheduler:
    limits = {"max_num_seqs": 8, "max_num_batched_tokens": 64, **limits}
    return Scheduler(BlockManager(num_blocks, block_size, enable_prefix_caching=False), **limits)


def test_prefill_admits_in_arrival_order_within_the_sequence_limit() -> None:
    scheduler = make_scheduler(max_num_seqs=3)
    requests = [make_request(5) for _ in range(4)]
    for request in requests:
        scheduler.add(request)
    batch = scheduler.schedule()
    assert batch.is_prefill
    assert batch.seqs == [r.seqs[0] for r in requests[:3]] and batch.num_new_tokens == [5, 5, 5]
    assert scheduler.running == requests[:3] and list(scheduler.waiting) == requests[3:]
    run(scheduler, batch)
    decode = scheduler.schedule()
    assert not decode.is_prefill and decode.num_new_tokens == [1, 1, 1]


def test_a_prompt_over_the_token_budget_is_chunked_and_keeps_its_last_token_for_the_final_chunk() -> None:
    scheduler = make_scheduler(max_num_batched_tokens=8)
    request = make_request(20)
    follower = make_request(3)
    scheduler.add(request)
    scheduler.add(follower)
    batches = []
    for _ in range(3):
        batch = scheduler.schedule()
        assert batch.is_prefill and batch.seqs[0] is request.seqs[0]
        batches.append(batch.num_new_tokens)
        run(scheduler, batch)
    # The follower waits behind the chunked prompt, then fills the rest of the final step's budget.
    assert batches == [[8], [8], [4, 3]]
    assert request.seqs[0].num_completion_tokens == 1 and follower.seqs[0].num_completion_tokens == 1


def test_a_multi_sequence_request_completes_its_prefill_in_one_step() -> None:
    scheduler = make_scheduler(max_num_batched_tokens=8)
    request = make_request(6, num_seqs=2)  # 12 tokens: more than one step's budget
    scheduler.add(request)
    first = scheduler.schedule()
    assert first.num_new_tokens == [4, 4]
    run(scheduler, first)
    assert all(seq.num_completion_tokens == 0 for seq in request.seqs)
    second = scheduler.schedule()
    assert second.num_new_tokens == [2, 2]
    run(scheduler, second)
    assert all(seq.num_completion_tokens == 1 for seq in request.seqs)


def test_decode_preempts_the_newest_request_and_requeues_it_first() -> None:
    scheduler = make_scheduler(num_blocks=4, block_size=4)
    old, new = make_request(4), make_request(4)
    scheduler.add(old)
    scheduler.add(new)
    run(scheduler, scheduler.schedule())  # both prefilled: 2 blocks used, 2 free
    late = make_request(3)
    scheduler.add(late)
    run(scheduler, scheduler.schedule())  # late takes a third block
    assert scheduler.block_manager.num_free_blocks == 1
    batch = scheduler.schedule()  # three sequences each need a new block; one is free
    assert scheduler.num_preemptions >= 1
    assert batch.seqs[0] is old.seqs[0]
    preempted = scheduler.waiting[0]
    assert preempted in (new, late) and preempted.seqs[0].block_table == []
    assert preempted.seqs[0].num_cached == 0 and preempted.seqs[0].status is SequenceStatus.WAITING
    run(scheduler, batch)


def test_a_request_that_does_not_fit_waits_while_others_decode() -> None:
    scheduler = make_scheduler(num_blocks=4, block_size=4)
    running = make_request(8)
    scheduler.add(running)
    run(scheduler, scheduler.schedule())
    big = make_request(12)  # needs 3 blocks, 2 free
    scheduler.add(big)
    batch = scheduler.schedule()
    assert not batch.is_prefill and batch.seqs == [running.seqs[0]]
    run(scheduler, batch)
    scheduler.remove(running)
    assert scheduler.schedule().seqs == [big.seqs[0]]


def test_nothing_to_schedule_returns_none_and_remove_frees_blocks() -> None:
    scheduler = make_scheduler()
    assert scheduler.schedule() is None
    request = make_request(9)
    scheduler.add(request)
    run(scheduler, scheduler.schedule())
    assert scheduler.block_manager.num_used_blocks == 3
    scheduler.remove(request)
    assert scheduler.block_manager.num_used_blocks == 0 and not scheduler.has_unfinished()


def test_copy_on_write_pairs_are_scheduled_for_forked_sequences() -> None:
    scheduler = make_scheduler()
    request = make_request(6)
    scheduler.add(request)
    run(scheduler, scheduler.schedule())
    parent = request.seqs[0]
    child = Sequence(seq_id=next(_ids), token_ids=list(parent.token_ids), num_prompt_tokens=6, index=1)
    scheduler.block_manager.fork(parent, child)
    child.token_ids[-1] = 8
    request.seqs.append(child)
    batch = scheduler.schedule()
    assert batch.seqs == [parent, child]
    assert len(batch.copy_pairs) == 1  # one of the two sharers of the partial block copies it
