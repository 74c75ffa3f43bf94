"""Long training sequences for `app_steps --pack-frames`: a token-table app's training utterances joined end to end
(lina_speech's decoder at 4k frames, where its corpus's utterances are ~3 s, 36-268 frames at 40 Hz)."""

from __future__ import annotations

from dataclasses import replace

import torch


def pack(utterances: list, frames: int) -> list:
    """Consecutive utterances joined (texts, text ids and codes concatenated) into sequences of exactly `frames`
    frames; the last one's extra frames and a tail shorter than `frames` are dropped, and the text ids are cut to
    the shortest sequence's so that every batch has one shape (compiled steps then see static shapes)."""
    out, group, have = [], [], 0
    for u in utterances:
        group.append(u)
        have += u.codes.shape[0]
        if have >= frames:
            joined = {
                "id": "+".join(g.id for g in group),
                "text": " ".join(g.text for g in group),
                "text_ids": torch.cat([g.text_ids for g in group]),
                "codes": torch.cat([g.codes for g in group])[:frames],
            }
            out.append(replace(group[0], **joined))
            group, have = [], 0
    shortest = min((len(u.text_ids) for u in out), default=0)
    return [replace(u, text_ids=u.text_ids[:shortest]) for u in out]


def pack_train_split(datamodule, frames: int) -> int:
    """Replace the datamodule's training utterances (its `table`, after setup) by packed ones; returns their count."""
    datamodule.setup("fit")
    table = datamodule.table
    train = pack(table.split("train"), frames)
    if not train:
        raise ValueError(f"the training utterances hold fewer than {frames} frames in all")
    table.utterances = train + [u for u in table.utterances if u.split != "train"]
    return len(train)
