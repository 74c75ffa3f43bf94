"""The MQAR generator: answers are the values paired earlier with the queried keys, nothing leaks, seeded."""

from __future__ import annotations

import pytest
import torch

from benchmarks.mqar import EVAL_SEED, FILLER, IGNORE, TRAIN_SEED_BASE, mqar_batch

SETTINGS = [
    {"seq_len": 64, "num_kv_pairs": 8, "vocab_size": 64},
    {"seq_len": 128, "num_kv_pairs": 16, "vocab_size": 128},
    {"seq_len": 32, "num_kv_pairs": 4, "vocab_size": 64, "num_queries": 2},
]


@pytest.mark.parametrize("setting", SETTINGS)
def test_each_answer_is_the_value_paired_with_that_key_earlier(setting):
    inputs, targets = mqar_batch(200, seed=3, **setting)
    d, vocab = setting["num_kv_pairs"], setting["vocab_size"]
    num_queries = setting.get("num_queries", d)
    assert inputs.shape == targets.shape == (200, setting["seq_len"])
    assert inputs.dtype == targets.dtype == torch.long
    keys, values = inputs[:, 0 : 2 * d : 2], inputs[:, 1 : 2 * d : 2]
    assert ((keys >= 1) & (keys < vocab // 2)).all() and ((values >= vocab // 2) & (values < vocab)).all()
    for b in range(len(inputs)):
        assert len(set(keys[b].tolist())) == d  # distinct keys: one answer per key
        pairs = dict(zip(keys[b].tolist(), values[b].tolist()))
        query_positions = (targets[b] != IGNORE).nonzero().flatten().tolist()
        assert len(query_positions) == num_queries
        assert min(query_positions) >= 2 * d  # queries come after every pair
        for t in query_positions:
            key = int(inputs[b, t])
            assert key in pairs and int(targets[b, t]) == pairs[key]
            pair_position = keys[b].tolist().index(key) * 2
            assert pair_position + 1 < t and int(inputs[b, pair_position + 1]) == pairs[key]
        queried = [int(inputs[b, t]) for t in query_positions]
        assert len(set(queried)) == num_queries  # each key queried at most once


@pytest.mark.parametrize("setting", SETTINGS)
def test_no_leakage(setting):
    inputs, targets = mqar_batch(200, seed=4, **setting)
    d, vocab = setting["num_kv_pairs"], setting["vocab_size"]
    at = targets != IGNORE
    region = inputs[:, 2 * d :]
    # after the pairs only filler and keys: no value token (so no answer) appears at or after a query
    assert ((region == FILLER) | (region < vocab // 2)).all()
    assert (inputs[at] < vocab // 2).all() and (targets[at] >= vocab // 2).all()  # query holds a key, not its answer
    # each answer token appears exactly once in the input, in its pair, before the query
    for b in range(0, 200, 7):
        for t in at[b].nonzero().flatten().tolist():
            occurrences = (inputs[b] == targets[b, t]).nonzero().flatten().tolist()
            assert len(occurrences) == 1 and occurrences[0] < 2 * d and occurrences[0] < t
    # targets only at query positions, where the input is a key; the pairs region has none
    assert (targets[:, : 2 * d] == IGNORE).all()
    assert ((region != FILLER) == at[:, 2 * d :]).all()


def test_deterministic_by_seed_and_held_out_distinct_from_training():
    a, b = mqar_batch(64, seed=7), mqar_batch(64, seed=7)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = mqar_batch(64, seed=8)
    assert not torch.equal(a[0], c[0])
    held_out = {tuple(row) for row in mqar_batch(1000, seed=EVAL_SEED)[0].tolist()}
    assert len(held_out) == 1000
    for step in range(20):  # the first training batches share no sequence with the held-out set
        train = mqar_batch(64, seed=TRAIN_SEED_BASE + step)[0]
        assert not held_out & {tuple(row) for row in train.tolist()}


def test_rejects_impossible_settings():
    with pytest.raises(ValueError):
        mqar_batch(1, seq_len=64, num_kv_pairs=40, vocab_size=64)  # more keys than key tokens
    with pytest.raises(ValueError):
        mqar_batch(1, seq_len=16, num_kv_pairs=8, vocab_size=64)  # no room for the queries
