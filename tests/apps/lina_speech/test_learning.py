"""The model learns text -> codec tokens beyond the unigram baseline in a few seconds (synthetic token table)."""

import lightning as L
import torch

from apps.lina_speech.data import LinaSpeechDataModule
from apps.lina_speech.model import LinaSpeech
from apps.lina_speech.module import LinaSpeechModule
from apps.lina_speech.speak import reads_text


def test_learns_beyond_unigram(table_dir, tmp_path):
    L.seed_everything(0)
    dm = LinaSpeechDataModule(source="tokens", root=str(table_dir), batch_size=8)
    dm.setup("fit")
    model = LinaSpeech(
        **dm.model_kwargs(), dim=32, num_heads=2, n_layer=1, text_layers=1, text_heads=2, d_blind=16, dropout=0.0
    )
    module = LinaSpeechModule(model, optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3))
    trainer = L.Trainer(
        max_epochs=4,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=dm)
    m = {k: float(v) for k, v in trainer.callback_metrics.items()}
    # The codes are a function of the text (two frames per character), so reading the text through the
    # cross-attention can approach accuracy 1, while the unigram baseline tops out at the most frequent code
    # (~0.11 here). Seen after 4 epochs (seed 0): loss 0.44x and accuracy 6.8x the baseline's; the bounds
    # below (0.75x, 2x) leave room for other seeds and still fail a model that ignores the text.
    assert m["val/loss"] < 0.75 * m["val/unigram_loss"]
    assert m["val/acc"] > 2 * m["val/unigram_acc"]
    # `reads_text`, the GPU run's check that the model reads the text: spaces for the text cost 0.39 nats a
    # token here (seed 0; 1.22 -> 1.61, the audio past still predicting the rest); 0.2 fails a text-blind model.
    reading = reads_text(model.eval(), dm, "val")
    assert reading["loss_one_char"] > reading["loss_text"] + 0.2
