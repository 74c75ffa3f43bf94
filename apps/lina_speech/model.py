"""Lina-Speech (Lemerle, Guichoux, Roebel, Obin; arXiv 2410.23320): a codec language model on gated linear attention.

    text ids -> TextEncoder -> memory
    codec tokens (delayed, see tokens.py) -> sum of per-quantizer embeddings
      -> n_layer mixing blocks ("encoder") -> + BlindCrossAttention(., memory) -> n_layer mixing blocks
      -> LayerNorm -> per-quantizer heads -> logits [B, T, n_q, codebook_size + 3]

This is the official AttentiveGLA decoder (`model/gla.py`); `arch=transformer` swaps every GLA mixer (also the
cross-attention's position network) for causal softmax attention with a KV cache, the paper's baseline.
Trained with next-token cross-entropy, targets equal to BOS (1) ignored; generation samples quantizer 0 top-k
with temperature, the others greedily (official), and stops when quantizer 0 emits the stop token. All state
lives in the blocks' recurrent states, so generation streams one frame per step in constant memory (GLA).
The exported graph (`forward`) is one recurrent decoding step.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from apps.lina_speech.layers import BlindCrossAttention, MixingBlock, TextEncoder
from apps.lina_speech.tokens import BOS, NUM_SPECIALS, PAD, STOP
from common.attention.gla import GatedLinearAttention
from common.audio.phonemes import TEXT_UNITS
from common.errors import check_choice, check_range

ARCHS = ("gla", "transformer")


class LinaSpeech(nn.Module):
    """The Lina-Speech codec language model.

    Args:
        n_q: codec quantizers per frame; codebook_size: codes per quantizer (vocabulary = codebook_size + 3).
        text_vocab: text token ids (0 = padding).
        dim, num_heads, n_layer: decoder width, heads, and blocks before and after the cross-attention.
        text_layers, text_heads: the text encoder (width `dim`).
        d_blind: width of BlindCrossAttention's position embeddings and its one-head position network.
        dropout: on every block's branches and the attention weights.
        arch: "gla" (the paper) or "transformer" (softmax with a KV cache, same sizes).
        expand_k, expand_v: GLA key and value widths over dim (Lina: 1 and 2).
        chunk_size: GLA chunk length when training (torch form; the Triton kernel uses 64).
        top_k, temperature: sampling of quantizer 0; max_frames: generation cap (then stop is forced).
        frames_per_token: (low, high) frames per text token (its BOS/EOS counted), or None: generation may stop
            only from low x tokens frames on and is stopped at high x tokens (the data fills it with the 1st and
            99th percentiles of its training utterances); None: only `max_frames`, the official rule.
        codec_dir: the folder of the codec whose codes the model speaks (its corpus and token table: IST, judge).
        codec: that codec's constructor options (`common.audio.codec.Codec`, its `codec.json`), or None (a user's
            codec). Given, the codec is a frozen submodule: `load_codec_weights` copies it in before training,
            and its weights then travel in the state dict (checkpoint, export), so predict needs no data folder.
        text_units: what the text ids are: "chars" of normalised text, or "phonemes" of espeak-ng
            (`common.audio.phonemes.text_ids`); the data fills it.
    """

    TRAINING_METHOD = "logits"  # what compile=true compiles besides forward (the export's one-step decoder)

    def __init__(
        self,
        n_q: int,
        codebook_size: int,
        text_vocab: int,
        dim: int = 256,
        num_heads: int = 4,
        n_layer: int = 3,
        text_layers: int = 3,
        text_heads: int = 4,
        d_blind: int = 64,
        dropout: float = 0.1,
        arch: str = "gla",
        expand_k: float = 1.0,
        expand_v: float = 2.0,
        chunk_size: int = 64,
        top_k: int = 100,
        temperature: float = 1.0,
        max_frames: int = 1000,
        frames_per_token: tuple[float, float] | None = None,
        codec_dir: str | None = None,
        codec: dict | None = None,
        text_units: str = "chars",
    ):
        super().__init__()
        check_choice("arch", arch, ARCHS)
        check_choice("text_units", text_units, TEXT_UNITS)
        for key, value in (("n_q", n_q), ("codebook_size", codebook_size), ("n_layer", n_layer), ("top_k", top_k)):
            check_range(key, value, 1)
        check_range("temperature", temperature, 0.0, low_inclusive=False)
        check_range("d_blind", d_blind, 2)
        self.n_q, self.codebook_size, self.vocab = n_q, codebook_size, codebook_size + NUM_SPECIALS
        self.text_vocab, self.arch, self.n_layer = text_vocab, arch, n_layer
        self.top_k, self.temperature, self.max_frames = top_k, temperature, max_frames
        self.codec_dir, self.text_units = codec_dir, text_units
        self.frames_per_token = tuple(frames_per_token) if frames_per_token else None
        mixer = "gla" if arch == "gla" else "softmax"

        def block(width: int, heads: int) -> MixingBlock:
            return MixingBlock(width, heads, mixer, dropout, expand_k, expand_v, chunk_size)

        self.text_encoder = TextEncoder(text_vocab, dim, text_heads, text_layers, dropout)
        self.embed = nn.ModuleList(nn.Embedding(self.vocab, dim, padding_idx=PAD) for _ in range(n_q))
        self.encoder = nn.ModuleList(block(dim, num_heads) for _ in range(n_layer))
        self.cross_att = BlindCrossAttention(dim, dim, dim, block(d_blind, 1), d_blind, dropout)
        self.decoder = nn.ModuleList(block(dim, num_heads) for _ in range(n_layer))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_q * self.vocab)
        self.codec = None
        if codec:
            from common.audio.codec import Codec  # the audio stack only for a model that speaks through it

            self.codec = Codec(**codec).requires_grad_(False)

    def load_codec_weights(self) -> None:
        """Copy the trained codec of `codec_dir` into `self.codec` (before training; later the state dict has it)."""
        from common.audio.codec_train import load_codec

        self.codec.load_state_dict(load_codec(self.codec_dir).state_dict())

    # ---- the network ------------------------------------------------------------------------------------
    def gla_layers(self) -> list[GatedLinearAttention]:
        """Every GLA mixer, in the order of the state list (encoder blocks, position network, decoder blocks)."""
        blocks = [*self.encoder, self.cross_att.pos_net, *self.decoder]
        return [b.mixer for b in blocks if isinstance(b.mixer, GatedLinearAttention)]

    def decode(self, audio_in, memory, mask, states=None, time_step=0, step: bool = False, weights: bool = False):
        """audio_in [B, T, n_q] token ids -> (logits [B, T, n_q, vocab], states after the last step), with
        `weights` also the cross-attention's content and position attentions [B, 2, T, S].

        `states`: None (zeros / empty caches) or a list of 2 n_layer + 1 per-block states (see `gla_layers`).
        """
        states = list(states) if states is not None else [None] * (2 * self.n_layer + 1)
        new = []
        x = sum(emb(audio_in[..., q]) for q, emb in enumerate(self.embed))
        for i, block in enumerate(self.encoder):
            x, s = block(x, states[i], step)
            new.append(s)
        attended, s, *att = self.cross_att(x, memory, mask, states[self.n_layer], time_step, step, weights)
        new.append(s)
        x = x + attended
        for i, block in enumerate(self.decoder):
            x, s = block(x, states[self.n_layer + 1 + i], step)
            new.append(s)
        logits = self.head(self.norm(x)).unflatten(-1, (self.n_q, self.vocab))
        return (logits, new, *att)

    def logits(self, text: torch.Tensor, audio_in: torch.Tensor, states=None, weights: bool = False):
        """Teacher-forced logits: text [B, S], audio_in [B, T, n_q] -> [B, T, n_q, vocab] (and with `weights`
        the cross-attention's content and position attentions [B, 2, T, S])."""
        memory, mask = self.text_encoder(text)
        logits, _, *att = self.decode(audio_in, memory, mask, states, weights=weights)
        return (logits, att[0]) if weights else logits

    @staticmethod
    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Next-token cross-entropy over all (b, t, q), targets equal to BOS (1) ignored (the official loss)."""
        return F.cross_entropy(logits.flatten(0, -2), target.flatten(), ignore_index=BOS)

    # ---- generation -------------------------------------------------------------------------------------
    def initial_states(self, batch_size: int, voice=None) -> list | None:
        """States before the first step: None (zeros), or a tuned voice's initial states (see ist.py)."""
        return None if voice is None else voice.states()

    def length_window(self, text: torch.Tensor, guard: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(fewest, most) frames [B] that generation may give each text [B, S] (see `frames_per_token`)."""
        tokens = (text != PAD).sum(1)
        if not (guard and self.frames_per_token):
            return torch.zeros_like(tokens), torch.full_like(tokens, self.max_frames)
        low, high = self.frames_per_token
        most = (tokens * high).ceil().long().clamp(max=self.max_frames)
        return (tokens * low).floor().long().clamp(max=most), most

    def sample(self, logits, t: int, stop_at, top_k: int, temperature: float, generator=None, window=None):
        """One delayed step's tokens [B, n_q] from logits [B, n_q, vocab], with the delay pattern's forced tokens.

        Quantizer 0 draws a code or the stop token (top-k with temperature); quantizers q > 0 take their best
        code (greedy). Forced: no stop before `window[0]` [B] frames, stop at `window[1]` (default: only at
        max_frames); BOS while t < q; after quantizer 0 stopped at step L, quantizer q emits stop at L + q and
        BOS after. `stop_at` [B] (-1 = running) is updated in place.
        """
        logits = logits.float().clone()
        logits[..., [PAD, BOS]] = float("-inf")
        logits[:, 1:, STOP] = float("-inf")
        fewest, most = (
            window if window is not None else (torch.zeros_like(stop_at), torch.full_like(stop_at, self.max_frames))
        )
        logits[t < fewest, 0, STOP] = float("-inf")
        forced = t >= most
        logits[forced, 0, :] = float("-inf")
        logits[forced, 0, STOP] = 0.0
        first = logits[:, 0] / temperature
        kth = first.topk(min(top_k, self.vocab), dim=-1).values[:, -1:]
        first = first.masked_fill(first < kth, float("-inf"))
        tokens = logits.argmax(-1)
        tokens[:, 0] = torch.multinomial(first.softmax(-1), 1, generator=generator)[:, 0]
        qs = torch.arange(self.n_q, device=logits.device)[None]
        stopped = (stop_at >= 0)[:, None]
        rel = t - stop_at[:, None]
        tokens = torch.where(stopped & (qs == rel), STOP, tokens)
        tokens = torch.where((stopped & (qs < rel)) | (qs > t), BOS, tokens)
        stop_at.masked_fill_((stop_at < 0) & (tokens[:, 0] == STOP), t)
        return tokens

    @torch.no_grad()
    def stream(self, text, voice=None, top_k=None, temperature=None, generator=None, guard=True) -> Iterator:
        """Generate from text [B, S] step by step through the recurrent state; yields (codes [B, n_q] of the
        next frame, valid [B]: False once that sample has stopped). Constant memory per step for GLA.
        `guard`: keep each length inside `length_window` (False: stop only on the stop token or max_frames)."""
        top_k, temperature = top_k or self.top_k, temperature or self.temperature
        memory, mask = self.text_encoder(text)
        b = text.shape[0]
        states = self.initial_states(b, voice)
        token = torch.full((b, 1, self.n_q), BOS, dtype=torch.long, device=text.device)
        stop_at = torch.full((b,), -1, dtype=torch.long, device=text.device)
        length = self.length_window(text, guard)
        window = []  # the last n_q delayed steps: frame f is complete at step f + n_q - 1
        for t in range(self.max_frames + self.n_q):
            logits, states = self.decode(token, memory, mask, states, t, step=True)
            tokens = self.sample(logits[:, 0], t, stop_at, top_k, temperature, generator, length)
            window = [*window[-(self.n_q - 1) :], tokens] if self.n_q > 1 else [tokens]
            frame = t - (self.n_q - 1)
            if frame >= 0:
                codes = torch.stack([window[q][:, q] for q in range(self.n_q)], dim=1) - NUM_SPECIALS
                yield codes.clamp(min=0), (stop_at < 0) | (frame < stop_at)
            if bool((stop_at >= 0).all()) and t >= int(stop_at.max()) + self.n_q - 1:
                return
            token = tokens[:, None]

    def generate(self, text, voice=None, top_k=None, temperature=None, generator=None, guard=True) -> list:
        """text [B, S] -> one codes tensor [L_b, n_q] (0 .. codebook_size - 1) per sample."""
        frames, valid = [], []
        for codes, ok in self.stream(text, voice, top_k, temperature, generator, guard):
            frames.append(codes)
            valid.append(ok)
        if not frames:
            return [torch.zeros(0, self.n_q, dtype=torch.long) for _ in range(text.shape[0])]
        codes, valid = torch.stack(frames, dim=1), torch.stack(valid, dim=1)
        return [codes[i, valid[i]] for i in range(codes.shape[0])]

    # ---- the exported graph -----------------------------------------------------------------------------
    def _unpack(self, state: torch.Tensor, pos_state: torch.Tensor) -> list:
        """Stacked states -> the per-block list of `decode` (GLA matrices, or (keys, values) caches)."""
        main = list(state) if self.arch == "gla" else [(s[0], s[1]) for s in state]
        pos = pos_state if self.arch == "gla" else (pos_state[0], pos_state[1])
        return [*main[: self.n_layer], pos, *main[self.n_layer :]]

    def _pack(self, states: list) -> tuple[torch.Tensor, torch.Tensor]:
        as_tensor = (lambda s: s) if self.arch == "gla" else torch.stack
        main = [as_tensor(s) for i, s in enumerate(states) if i != self.n_layer]
        return torch.stack(main), as_tensor(states[self.n_layer])

    def forward(self, token, memory, mask, time_step, state, pos_state):
        """One decoding step, the deployment graph: token [B, 1, n_q], memory [B, S, dim] and mask [B, S] (the
        text encoder's), time_step [] (the step's index), the stacked states -> (logits [B, n_q, vocab], the
        states after the step). GLA: state [2 n_layer, B, H, K, V], pos_state [B, 1, Kp, Vp] (constant size);
        transformer: state [2 n_layer, 2, B, H, M, D] (keys and values of M past steps; M + 1 after),
        pos_state [2, B, 1, M, Dp]."""
        logits, new = self.decode(token, memory, mask, self._unpack(state, pos_state), time_step, step=True)
        return (logits[:, 0], *self._pack(new))

    def step_inputs(self, b: int, s: int, t: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
        """Inputs of `forward` at step t for b random texts of s tokens (the last one 2 shorter), the states
        those of t steps of a random prefix."""
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            memory, _ = self.text_encoder(torch.randint(1, self.text_vocab, (b, s), generator=gen))
            mask = torch.ones(b, s, dtype=torch.bool)
            mask[-1, -2:] = False
            prefix = torch.randint(NUM_SPECIALS, self.vocab, (b, t + 1, self.n_q), generator=gen)
            _, states = self.decode(prefix[:, :t], memory, mask)
        return (prefix[:, t:], memory, mask, torch.tensor(t), *self._pack(states))

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        return self.step_inputs(2, 7, 3)

    def export_check_inputs(self) -> list[tuple[torch.Tensor, ...]]:
        """Other batch, text and step sizes than traced (the dynamic dims)."""
        return [self.step_inputs(3, 11, 6, seed=1)]

    def export_spec(self) -> dict:
        _, _, _, _, state, pos_state = self.example_inputs()
        if self.arch == "gla":
            main_shape, pos_shape = [state.shape[0], "B", *state.shape[2:]], ["B", *pos_state.shape[1:]]
            next_main, next_pos = main_shape, pos_shape
        else:  # the caches grow by one step
            main_shape = [*state.shape[:2], "B", state.shape[3], "M", state.shape[5]]
            pos_shape = [2, "B", 1, "M", pos_state.shape[-1]]
            next_main = [*main_shape[:4], "M + 1", main_shape[5]]
            next_pos = [2, "B", 1, "M + 1", pos_state.shape[-1]]
        f32 = "float32"
        return {
            "inputs": {
                "token": {"shape": ["B", 1, self.n_q], "dtype": "int64"},
                "memory": {"shape": ["B", "S", self.norm.normalized_shape[0]], "dtype": f32},
                "mask": {"shape": ["B", "S"], "dtype": "bool"},
                "time_step": {"shape": [], "dtype": "int64"},
                "state": {"shape": main_shape, "dtype": f32},
                "pos_state": {"shape": pos_shape, "dtype": f32},
            },
            "outputs": {
                "logits": {"shape": ["B", self.n_q, self.vocab], "dtype": f32},
                "next_state": {"shape": next_main, "dtype": f32},
                "next_pos_state": {"shape": next_pos, "dtype": f32},
            },
        }
