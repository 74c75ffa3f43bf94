"""The delay pattern and the specials: round trip, the BOS/stop layout, padding conventions."""

import torch

from apps.lina_speech.tokens import BOS, NUM_SPECIALS, PAD, STOP, collate_codes, delay, training_pair, undelay


def test_delay_layout_and_round_trip():
    codes = torch.arange(12).reshape(4, 3) % 7
    seq = delay(codes)
    assert seq.shape == (4 + 3, 3)
    for q in range(3):
        col = seq[:, q].tolist()
        assert col[:q] == [BOS] * q  # quantizer q starts q steps late
        assert col[q : q + 4] == (codes[:, q] + NUM_SPECIALS).tolist()
        assert col[q + 4] == STOP and col[q + 5 :] == [BOS] * (3 - 1 - q)
    torch.testing.assert_close(undelay(seq, 4), codes)


def test_training_pair_is_shifted_by_one_step():
    codes = torch.randint(0, 5, (6, 2))
    audio_in, target = training_pair(codes)
    assert (audio_in[0] == BOS).all()
    torch.testing.assert_close(audio_in[1:], target[:-1])


def test_collate_pads_inputs_with_pad_and_targets_with_ignore():
    audio_in, target = collate_codes([torch.zeros(5, 2, dtype=torch.long), torch.zeros(2, 2, dtype=torch.long)])
    assert audio_in.shape == target.shape == (2, 7, 2)
    assert (audio_in[1, 4:] == PAD).all() and (target[1, 4:] == BOS).all()
