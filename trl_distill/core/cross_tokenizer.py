"""Teachers with their own tokenizer: span alignment, chain-rule span log-probabilities and the cross-tokenizer loss.

A student and a teacher of two model families read the same conversation as two different token sequences. The
teacher is shown the conversation rendered with *its own* chat template and the student's rollout re-tokenized by its
own tokenizer; the two completions are then aligned by the UTF-8 **byte spans** of the rollout text (docs/
cross_tokenizer.md):

- every token has a byte width: byte-level BPE pieces (`Ġ`, `Ċ`, …) through GPT-2's byte map, SentencePiece pieces
  with `▁` read as a space and byte-fallback pieces `<0xNN>` as one byte, added non-special tokens as their text;
  special tokens have width 0, except the **end of turn** of each side's template (SmolLM2's `<|im_end|>`, Gemma's
  `<end_of_turn>`), which both get one virtual byte past the text so that they align with each other;
- an aligned **span** closes wherever both sides' cumulative byte ends agree (the boundaries the two tokenizers share),
  as GOLD's byte-offset walk does; several tokens on one side of a span are combined by the **chain rule**:
  `log P(span) = Σ_k log p(y_k | y_<k)` (X-Token's and GOLD's "observed" merge);
- per span, each side's next-piece distribution at the span's first token is coarsened to outcomes both sides share:
  every **exact-match vocabulary piece** (same bytes on both sides, precomputed once as an id↔id map) other than the
  two sides' first pieces, one outcome "the span as sampled" carrying the chain-rule probability, and one tail bucket
  for the rest. The generalized JSD_β is taken between those two distributions. The probabilities of the pieces that
  have no counterpart are compared by the vocabulary-free **ULD** distance (L1 between the sorted probabilities,
  Boizard et al. 2024, as GOLD does), over the top `uld_top_k` plus the remaining mass.

When the teacher's tokenizer is the student's, every span is one token, every piece matches itself, the tail is empty
and nothing is unmatched: the loss is the same-tokenizer generalized JSD, to float tolerance (tested).
"""

import json
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch.nn.utils.rnn import pad_sequence
from transformers.convert_slow_tokenizer import bytes_to_unicode

from .divergence import LMHead, _check_beta, checkpointed_chunks, generalized_jsd_from_logits, with_tail_bucket


__all__ = ["AlignedBatch", "TeacherTokenizerBridge", "cross_tokenizer_divergence", "span_gap", "token_bytes"]

# the end of turn's virtual width: one byte past the text, so the two sides' end-of-turn tokens form one span
END_OF_TURN_WIDTH = 1
PROBE_TEXTS = ("Hello, world!", "  two  spaces\n\nnew lines\tand tabs", "Zürich – 東京 😀", "x = 3.14159; y = [1, 2]")


_BYTE_OF = {ch: b for b, ch in bytes_to_unicode().items()}  # byte-level BPE's printable stand-ins


def _decoder_kind(tokenizer) -> str:
    """`"byte_level"` (GPT-2-style pieces) or `"metaspace"` (SentencePiece `▁` pieces, byte fallback)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError("is not a fast tokenizer (no `backend_tokenizer`), so its pieces cannot be read as bytes")
    decoder = json.loads(backend.to_str()).get("decoder") or {}
    if "ByteLevel" in json.dumps(decoder):
        return "byte_level"
    return "metaspace"


def _piece_bytes(piece: str, kind: str) -> bytes:
    if kind == "byte_level":
        if all(ch in _BYTE_OF for ch in piece):
            return bytes(_BYTE_OF[ch] for ch in piece)
        return piece.encode("utf-8")
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        return bytes([int(piece[3:5], 16)])
    return piece.replace("\u2581", " ").encode("utf-8")


def token_bytes(tokenizer) -> list[bytes]:
    """The bytes each token id stands for in decoded text, indexed by id; special tokens stand for `b""`.

    Args:
        tokenizer ([`~transformers.PreTrainedTokenizerFast`]): a fast tokenizer.

    Returns:
        `list[bytes]`: one entry per id in `range(len(tokenizer))`.
    """
    kind = _decoder_kind(tokenizer)
    table = [b""] * len(tokenizer)
    for piece, index in tokenizer.get_vocab().items():
        if index < len(table):
            table[index] = _piece_bytes(piece, kind)
    for index, added in getattr(tokenizer, "added_tokens_decoder", {}).items():
        if index < len(table):
            table[index] = b"" if added.special else added.content.encode("utf-8")
    return table


def vocabulary_map(student_bytes: list[bytes], teacher_bytes: list[bytes]) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact-match pieces: `(student_ids, teacher_ids)`, `(K,)` each, pairs of ids that stand for the same non-empty
    bytes. Where one side has several ids for the same bytes (a byte-fallback `<0x41>` beside `A`), the first regular
    piece is kept, so the map is one-to-one."""

    def by_bytes(table):
        index = {}
        for i, piece in enumerate(table):
            if piece and piece not in index:
                index[piece] = i
        return index

    student, teacher = by_bytes(student_bytes), by_bytes(teacher_bytes)
    common = [piece for piece in student if piece in teacher]
    return (
        torch.tensor([student[p] for p in common], dtype=torch.long),
        torch.tensor([teacher[p] for p in common], dtype=torch.long),
    )


def end_of_turn_id(tokenizer) -> int | None:
    """The special token the chat template closes an assistant turn with (the first special token after the reply
    text), else the tokenizer's EOS; `None` when neither exists."""
    messages = [{"role": "user", "content": "ping"}, {"role": "assistant", "content": "pong"}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:  # noqa: BLE001 - a template may refuse any conversation; the EOS is the fallback
        text = ""
    tail = text[text.rfind("pong") + 4 :] if "pong" in text else ""
    if tail:
        encoding = tokenizer(tail, add_special_tokens=False)["input_ids"]
        special = set(tokenizer.all_special_ids) | {
            i for i, added in getattr(tokenizer, "added_tokens_decoder", {}).items() if added.special
        }
        for token in encoding:
            if token in special:
                return token
    return tokenizer.eos_token_id


def render_messages(tokenizer, prompt) -> str:
    """`prompt` (a conversation or a plain string) as the text its model continues."""
    if isinstance(prompt, str):
        return prompt
    return tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)


@dataclass
class AlignedBatch:
    """The teacher's view of a batch of student rollouts, and the spans that align the two.

    Args:
        input_ids (`torch.Tensor`): `(B, P + C)` teacher prompt (left-padded) and completion (right-padded) ids.
        attention_mask (`torch.Tensor`): `(B, P + C)`.
        completion_ids (`torch.Tensor`): `(B, C)` the teacher's completion ids.
        student_spans (`torch.Tensor`): `(B, C_s)` the span of each student completion token, `-1` outside any span.
        teacher_spans (`torch.Tensor`): `(B, C)` the span of each teacher completion token, `-1` outside.
        num_spans (`torch.Tensor`): `(B,)` spans per row.
        misaligned (`torch.Tensor`): `(B,)` bool, rows whose texts did not re-tokenize to the same bytes (no spans).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    completion_ids: torch.Tensor
    student_spans: torch.Tensor
    teacher_spans: torch.Tensor
    num_spans: torch.Tensor
    misaligned: torch.Tensor

    @property
    def logits_to_keep(self) -> int:
        return self.completion_ids.size(1)


def span_ids(student_ends: np.ndarray, teacher_ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Span index of each token on both sides from their cumulative byte ends: a span closes at every end the two
    sides share. Zero-width tokens join the span that their position falls in."""
    boundaries = np.intersect1d(student_ends, teacher_ends)
    boundaries = boundaries[boundaries > 0]
    return np.searchsorted(boundaries, student_ends, "left"), np.searchsorted(boundaries, teacher_ends, "left")


class TeacherTokenizerBridge:
    """
    Everything needed to distil from a teacher with its own tokenizer, built once per teacher.

    At construction it checks that the teacher's tokenizer can be aligned, and raises a `ValueError` naming the teacher
    and what is missing otherwise: a fast tokenizer (character offsets, pieces readable as bytes), a chat template, an
    end-of-turn token, and a round trip of probe texts through both tokenizers that gives back the same bytes. It then
    precomputes each side's byte table and the exact-match vocabulary map.

    Args:
        student_tokenizer ([`~transformers.PreTrainedTokenizerFast`]): the student's tokenizer.
        teacher_tokenizer ([`~transformers.PreTrainedTokenizerFast`]): the teacher's tokenizer.
        name (`str`, defaults to `"teacher"`): the teacher's name in errors.
        stop_ids (`list[int]`, *optional*): the student's ids that end a completion (default: its end of turn and EOS).
    """

    def __init__(self, student_tokenizer, teacher_tokenizer, name: str = "teacher", stop_ids=None):
        self.name = name
        self.student_tokenizer = getattr(student_tokenizer, "tokenizer", student_tokenizer)
        self.teacher_tokenizer = getattr(teacher_tokenizer, "tokenizer", teacher_tokenizer)
        self.identical = self.student_tokenizer.get_vocab() == self.teacher_tokenizer.get_vocab()
        self._validate()
        self.student_bytes = token_bytes(self.student_tokenizer)
        self.teacher_bytes = token_bytes(self.teacher_tokenizer)
        self.student_widths = np.array([len(b) for b in self.student_bytes], dtype=np.int64)
        self.teacher_widths = np.array([len(b) for b in self.teacher_bytes], dtype=np.int64)
        student_eot = end_of_turn_id(self.student_tokenizer)
        ids = {student_eot, self.student_tokenizer.eos_token_id, *(stop_ids or ())} - {None}
        self.student_stop_ids = sorted(ids)
        self.teacher_end_of_turn = end_of_turn_id(self.teacher_tokenizer)
        if self.identical:  # every id is its own match (special tokens included): the same-tokenizer loss, exactly
            identity = torch.arange(len(self.student_tokenizer))
            self.student_matched, self.teacher_matched = identity, identity.clone()
        else:
            self.student_matched, self.teacher_matched = vocabulary_map(self.student_bytes, self.teacher_bytes)
        self._check_round_trip()

    def _fail(self, missing: str):
        raise ValueError(
            f"Teacher {self.name!r} cannot be distilled from across tokenizers: its tokenizer "
            f"{self.teacher_tokenizer.name_or_path or type(self.teacher_tokenizer).__name__!r} {missing}. Nothing is "
            "trained on misaligned ids; give the teacher the student's tokenizer or a tokenizer that has it."
        )

    def _validate(self) -> None:
        for which, tokenizer in (("teacher", self.teacher_tokenizer), ("student", self.student_tokenizer)):
            try:
                _decoder_kind(tokenizer)
            except ValueError as error:
                self._fail(f"({which} side) {error}")
            if not getattr(tokenizer, "chat_template", None):
                self._fail(f"({which} side) has no chat template (`tokenizer.chat_template` is unset)")
        if end_of_turn_id(self.teacher_tokenizer) is None:
            self._fail("has no end-of-turn token (its template closes no turn with a special token, and no eos_token)")

    def _check_round_trip(self) -> None:
        for text in PROBE_TEXTS:
            for which, tokenizer, table in (
                ("teacher", self.teacher_tokenizer, self.teacher_bytes),
                ("student", self.student_tokenizer, self.student_bytes),
            ):
                ids = tokenizer(text, add_special_tokens=False)["input_ids"]
                decoded = b"".join(table[i] for i in ids)
                if decoded != text.encode("utf-8"):
                    self._fail(
                        f"({which} side) does not decode back to the text it encodes: {text!r} -> {decoded!r} (a "
                        "normalizer or an added prefix space changes the text, so byte spans cannot be aligned)"
                    )

    # ------------------------------------------------------------------------------------------------- batch
    def teacher_prompt_ids(self, prompt) -> list[int]:
        """The teacher's prompt ids: `prompt` rendered with the teacher's template and tokenized without added special
        tokens; a BOS is prepended when the tokenizer adds one by default and the rendering does not start with it
        (Gemma's template writes its `<bos>` itself)."""
        tokenizer = self.teacher_tokenizer
        text = render_messages(tokenizer, prompt)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        bos = tokenizer.bos_token_id
        adds_bos = bos is not None and tokenizer("a")["input_ids"][:1] == [bos]
        if adds_bos and (not ids or ids[0] != bos):
            ids = [bos, *ids]
        return ids

    def _student_text(self, ids: list[int]) -> tuple[bytes, int, int | None]:
        """The completion's bytes, how many of its tokens they cover (up to a stop id or the longest valid UTF-8
        prefix) and the teacher's end of turn when it ended with a stop id (the same id with one tokenizer)."""
        ended = None
        for k, token in enumerate(ids):
            if token in self.student_stop_ids:
                ids, ended = ids[:k], token if self.identical else self.teacher_end_of_turn
                break
        data = b"".join(self.student_bytes[i] for i in ids)
        try:
            data.decode("utf-8")
            return data, len(ids), ended
        except UnicodeDecodeError:
            ends = np.cumsum(self.student_widths[ids]) if ids else np.zeros(0, dtype=np.int64)
            for k in range(len(ids) - 1, -1, -1):  # drop tokens from the end until the bytes are text
                try:
                    data[: ends[k]].decode("utf-8")
                    return data[: ends[k]], k + 1, None
                except UnicodeDecodeError:
                    continue
            return b"", 0, None

    def align(
        self, prompts, completion_ids: torch.Tensor, completion_mask: torch.Tensor, prompt_ids=None
    ) -> AlignedBatch:
        """Renders and re-tokenizes a batch of student rollouts for the teacher and aligns the two completions.

        Args:
            prompts (`list[str | list[dict]]`): the rows' prompts, as the student was given them.
            completion_ids (`torch.Tensor`): `(B, C_s)` the student's completion ids.
            completion_mask (`torch.Tensor`): `(B, C_s)`, nonzero on the completion tokens (a prefix of each row).
            prompt_ids (`list[list[int]]`, *optional*): the student's prompt ids per row (no padding); with one
                tokenizer the teacher reads them and the student's own completion ids (nothing is re-tokenized, each
                token is its own span), so the loss is the same-tokenizer one.

        Returns:
            [`AlignedBatch`]: the teacher's input, and the span of every token on both sides.
        """
        rows = [ids[mask != 0].tolist() for ids, mask in zip(completion_ids.cpu(), completion_mask.cpu())]
        texts = [self._student_text(ids) for ids in rows]
        if self.identical:
            teacher_ids = [ids[:covered] for ids, (_, covered, _) in zip(rows, texts)]
        else:
            teacher_ids = self.teacher_tokenizer(
                [data.decode("utf-8") for data, _, _ in texts], add_special_tokens=False
            )["input_ids"]
        student_spans = torch.full(completion_ids.shape, -1, dtype=torch.long)
        teacher_rows, teacher_span_rows, num_spans, misaligned = [], [], [], []
        for b, ((data, covered, ended), ids_t) in enumerate(zip(texts, teacher_ids)):
            widths_s = self.student_widths[rows[b][:covered]]
            widths_t = self.teacher_widths[ids_t] if ids_t else np.zeros(0, dtype=np.int64)
            bad = int(widths_t.sum()) != len(data)
            if ended is not None:
                widths_s = np.append(widths_s, END_OF_TURN_WIDTH)
                ids_t, widths_t = [*ids_t, ended], np.append(widths_t, END_OF_TURN_WIDTH)
            if bad or not len(widths_s):
                teacher_rows.append(torch.tensor(ids_t[:1] or [self.teacher_end_of_turn], dtype=torch.long))
                teacher_span_rows.append(torch.full((len(teacher_rows[-1]),), -1, dtype=torch.long))
                num_spans.append(0)
                misaligned.append(bad)
                continue
            if self.identical:  # each token its own span, special tokens included
                spans_s = spans_t = np.arange(len(ids_t))
            else:
                spans_s, spans_t = span_ids(np.cumsum(widths_s), np.cumsum(widths_t))
            student_spans[b, : len(spans_s)] = torch.from_numpy(spans_s)
            teacher_rows.append(torch.tensor(ids_t, dtype=torch.long))
            teacher_span_rows.append(torch.from_numpy(spans_t))
            num_spans.append(int(spans_s.max()) + 1)
            misaligned.append(False)
        if not (self.identical and prompt_ids is not None):
            prompt_ids = [self.teacher_prompt_ids(p) for p in prompts]
        return self._teacher_batch(prompt_ids, teacher_rows, teacher_span_rows, student_spans, num_spans, misaligned)

    def _teacher_batch(self, prompt_ids, teacher_rows, teacher_span_rows, student_spans, num_spans, misaligned):
        pad = self.teacher_tokenizer.pad_token_id
        pad = self.teacher_tokenizer.eos_token_id if pad is None else pad
        prompt_rows = [torch.tensor(ids, dtype=torch.long) for ids in prompt_ids]
        prompt_ids = pad_sequence(prompt_rows, batch_first=True, padding_value=pad, padding_side="left")
        prompt_mask = pad_sequence(
            [torch.ones_like(r) for r in prompt_rows], batch_first=True, padding_value=0, padding_side="left"
        )
        completion = pad_sequence(teacher_rows, batch_first=True, padding_value=pad)
        completion_mask = pad_sequence([torch.ones_like(r) for r in teacher_rows], batch_first=True, padding_value=0)
        return AlignedBatch(
            input_ids=torch.cat([prompt_ids, completion], dim=1),
            attention_mask=torch.cat([prompt_mask, completion_mask], dim=1),
            completion_ids=completion,
            student_spans=student_spans,
            teacher_spans=pad_sequence(teacher_span_rows, batch_first=True, padding_value=-1),
            num_spans=torch.tensor(num_spans, dtype=torch.long),
            misaligned=torch.tensor(misaligned, dtype=torch.bool),
        )

    def positions(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """`(student_position, teacher_position)`: for every id of each vocabulary, its index in the exact-match map,
        `-1` when it has no counterpart (cached per device)."""
        cache = self.__dict__.setdefault("_positions", {})
        if device not in cache:
            student = torch.full((len(self.student_bytes),), -1, dtype=torch.long)
            teacher = torch.full((len(self.teacher_bytes),), -1, dtype=torch.long)
            order = torch.arange(len(self.student_matched))
            student[self.student_matched] = order
            teacher[self.teacher_matched] = order
            cache[device] = (student.to(device), teacher.to(device))
        return cache[device]


# ----------------------------------------------------------------------------------------------------------- loss
def _global_spans(spans: torch.Tensor, num_spans: torch.Tensor) -> torch.Tensor:
    """`(B, C)` per-row span ids -> ids over the whole batch (row offsets added); `-1` stays `-1`."""
    offsets = torch.cumsum(num_spans, 0) - num_spans
    spans = spans.to(offsets.device)
    return torch.where(spans >= 0, spans + offsets[:, None], spans)


def _sampled_logprobs(hidden, head: LMHead, ids, temperature: float, chunk_size: int):
    """`(log p(ids), entropy)` per row of `hidden`, `chunk_size` rows at a time (checkpointed when gradients flow)."""

    def chunk(h, y):
        log_p = F.log_softmax(head.logits(h) / temperature, dim=-1)
        return log_p.gather(-1, y[:, None]).squeeze(-1), -(log_p.exp() * log_p).sum(-1)

    grad = torch.is_grad_enabled() and (hidden.requires_grad or head.weight.requires_grad)
    parts = [
        torch.utils.checkpoint.checkpoint(
            chunk, hidden[i : i + chunk_size], ids[i : i + chunk_size], use_reentrant=False
        )
        if grad
        else chunk(hidden[i : i + chunk_size], ids[i : i + chunk_size])
        for i in range(0, hidden.size(0), chunk_size)
    ]
    if not parts:
        empty = hidden.new_zeros(0, dtype=torch.float32)
        return empty, empty
    return torch.cat([p for p, _ in parts]), torch.cat([e for _, e in parts])


@dataclass
class SpanSide:
    """One side's tokens of the batch's aligned spans: the hidden states predicting them, their ids, their span (over
    the whole batch), and the chain-rule span log-probabilities `log P(span) = Σ_k log p(y_k | y_<k)` `(G,)`."""

    hidden: torch.Tensor
    ids: torch.Tensor
    spans: torch.Tensor
    span_logprobs: torch.Tensor
    entropy: torch.Tensor
    first: torch.Tensor


def span_side(hidden, head: LMHead, ids, spans, num_spans, temperature=1.0, chunk_size=256) -> SpanSide:
    """Gathers one side's span tokens and sums their log-probabilities over each span (the chain rule).

    Args:
        hidden (`torch.Tensor`): `(B, C, H)` hidden states aligned with the completion tokens `ids` `(B, C)`.
        head (`LMHead`): that model's output projection.
        spans (`torch.Tensor`): `(B, C)` per-row span of each token, `-1` outside any span.
        num_spans (`torch.Tensor`): `(B,)` spans per row.
    """
    valid = (spans >= 0).reshape(-1).to(hidden.device)
    flat = _global_spans(spans, num_spans).reshape(-1).to(hidden.device)[valid]
    h = hidden.reshape(-1, hidden.size(-1))[valid]
    y = ids.reshape(-1).to(hidden.device)[valid]
    logprobs, entropy = _sampled_logprobs(h, head, y, temperature, chunk_size)
    total = int(num_spans.sum())
    span_logprobs = logprobs.new_zeros(total).index_add(0, flat, logprobs)
    is_first = torch.ones_like(flat, dtype=torch.bool)
    is_first[1:] = flat[1:] != flat[:-1]
    return SpanSide(h, y, flat, span_logprobs, entropy, is_first.nonzero().squeeze(-1))


def span_gap(student: SpanSide, teacher: SpanSide, num_spans: torch.Tensor) -> torch.Tensor:
    """Per-row gap on aligned spans, `(1/G) Σ_g |log T(span_g) − log S(span_g)|`; `(B,)`, 0 for rows without spans.
    With one tokenizer every span is one token, and this is CaMOPD's token gap."""
    rows = torch.repeat_interleave(torch.arange(len(num_spans)), num_spans).to(student.span_logprobs.device)
    diff = (teacher.span_logprobs.to(rows.device) - student.span_logprobs).abs().float()
    total = diff.new_zeros(len(num_spans)).index_add(0, rows, diff)
    return total / num_spans.to(total.device).clamp(min=1).float()


def coarsened_logprobs(log_p, matched, first_positions, span_logprobs):
    """One side's next-piece log-distribution `(n, V)` at each span's first token, coarsened to the outcomes both sides
    share: the exact-match pieces `matched` `(K,)` except the two sides' first pieces (`first_positions`, `(n, 2)`
    indices into `matched`, `-1` for none), then "the span as sampled" (`span_logprobs`, the chain rule), then the tail.

    Returns:
        `torch.Tensor`: `(n, K + 2)` log-probabilities (the dropped pieces at log 0).
    """
    entries = log_p[:, matched]
    keep = torch.ones_like(entries, dtype=torch.bool)
    for column in first_positions.unbind(-1):
        has = column >= 0
        keep[has.nonzero().squeeze(-1), column[has]] = False
    entries = torch.cat([entries, span_logprobs[:, None].to(entries.dtype)], dim=-1)
    keep = torch.cat([keep, torch.ones_like(keep[:, :1])], dim=-1)
    return with_tail_bucket(entries, keep)


def sorted_distance(student_probs, teacher_probs, top_k: int) -> torch.Tensor:
    """ULD's vocabulary-free distance, per row: `Σ_i |sort(p_S)_i − sort(p_T)_i|` over the top `top_k` of each side,
    plus `|rest_S − rest_T|` for the mass below them (Boizard et al. 2024)."""
    k = min(top_k, student_probs.size(-1), teacher_probs.size(-1))
    top_s, top_t = student_probs.topk(k, dim=-1).values, teacher_probs.topk(k, dim=-1).values
    rest = (student_probs.sum(-1) - top_s.sum(-1)) - (teacher_probs.sum(-1) - top_t.sum(-1))
    return (top_s - top_t).abs().sum(-1) + rest.abs()


def _unmatched(probs, matched, first):
    """The probabilities of the pieces without a counterpart, the span's own first piece zeroed (its mass is in the
    span outcome)."""
    probs = probs.scatter(-1, first[:, None], 0.0)
    keep = torch.ones(probs.size(-1), dtype=torch.bool, device=probs.device)
    keep[matched] = False
    return probs[:, keep]


def span_divergence(student_hidden, student_head, teacher_hidden, teacher_head, sides, bridge, options):
    """Per-span generalized JSD_β between the coarsened distributions (see [`coarsened_logprobs`]) plus `uld_weight`
    times the [`sorted_distance`] of the unmatched pieces, for the spans of one chunk."""
    beta, temperature, uld_weight, top_k = options
    log_ps = F.log_softmax(student_head.logits(student_hidden) / temperature, dim=-1)
    with torch.no_grad():
        log_pt = F.log_softmax(teacher_head.logits(teacher_hidden) / temperature, dim=-1)
    s_pos, t_pos = bridge.positions(log_ps.device)
    s_first, t_first, s_span, t_span = sides
    first_positions = torch.stack([s_pos[s_first], t_pos[t_first]], dim=-1)
    matched_s, matched_t = bridge.student_matched.to(log_ps.device), bridge.teacher_matched.to(log_ps.device)
    coarse_s = coarsened_logprobs(log_ps, matched_s, first_positions, s_span)
    coarse_t = coarsened_logprobs(log_pt, matched_t, first_positions, t_span.to(log_pt.dtype))
    divergence = generalized_jsd_from_logits(coarse_s, coarse_t, beta)
    if uld_weight and len(matched_s) < log_ps.size(-1) and len(matched_t) < log_pt.size(-1):
        unmatched_s = _unmatched(log_ps.exp(), matched_s, s_first)
        unmatched_t = _unmatched(log_pt.exp(), matched_t, t_first)
        divergence = divergence + uld_weight * sorted_distance(unmatched_s, unmatched_t, top_k)
    return divergence


def cross_tokenizer_divergence(
    student_hidden: torch.Tensor,
    student_head: LMHead,
    teacher_hidden: torch.Tensor,
    teacher_head: LMHead,
    student_ids: torch.Tensor,
    aligned: AlignedBatch,
    mask: torch.Tensor,
    bridge: TeacherTokenizerBridge,
    beta: float,
    temperature: float = 1.0,
    uld_weight: float = 1.0,
    uld_top_k: int = 256,
    chunk_size: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """[`~trl_distill.core.divergence.generalized_jsd`]'s counterpart for a teacher with its own tokenizer.

    Each aligned span's divergence (see the module docstring) is placed at the span's first student token, so that
    summing over tokens and dividing by the loss tokens gives the same reduction as the same-tokenizer loss; with one
    tokenizer the two are equal to float tolerance. The `(spans, V)` logits are built `chunk_size` spans at a time under
    activation checkpointing.

    Args:
        student_hidden (`torch.Tensor`): `(B, C_s, H_s)` student hidden states aligned with `student_ids`.
        student_head (`LMHead`): the student's output projection.
        teacher_hidden (`torch.Tensor`): `(B, C_t, H_t)` teacher hidden states aligned with `aligned.completion_ids`.
        teacher_head (`LMHead`): the teacher's output projection (its own vocabulary).
        student_ids (`torch.Tensor`): `(B, C_s)` the student's completion ids.
        aligned ([`AlignedBatch`]): from [`TeacherTokenizerBridge.align`].
        mask (`torch.Tensor`): `(B, C_s)` the student's loss mask; a span counts when its first token is in it.
        bridge ([`TeacherTokenizerBridge`]): the teacher's bridge.
        beta (`float`): generalized JSD coefficient (0 forward KL, 1 reverse KL).
        temperature (`float`, defaults to 1.0): softmax temperature of both models.
        uld_weight (`float`, defaults to 1.0): weight of the ULD term on the unmatched pieces (0 to leave it out).
        uld_top_k (`int`, defaults to 256): sorted probabilities compared by the ULD term (the rest as one mass).

    Returns:
        `(divergence, entropy)`, each `(B, C_s)`: the span divergences at their first student tokens, the student's
        entropy at every token of a span; zeros elsewhere.
    """
    _check_beta(beta)
    device = student_head.weight.device
    student = span_side(student_hidden.to(device), student_head, student_ids, aligned.student_spans,
                        aligned.num_spans, temperature, chunk_size)  # fmt: skip
    with torch.no_grad():
        teacher = span_side(teacher_hidden, teacher_head, aligned.completion_ids, aligned.teacher_spans,
                            aligned.num_spans, temperature, chunk_size)  # fmt: skip
    spans = torch.zeros(0, device=device)
    if len(student.first):
        options = (beta, temperature, uld_weight, uld_top_k)
        spans = _span_divergences(student, teacher, (student_head, teacher_head), bridge, options, chunk_size)
    return _place(spans, student, aligned, mask, device)


def _span_divergences(student: SpanSide, teacher: SpanSide, heads, bridge, options, chunk_size: int) -> torch.Tensor:
    """[`span_divergence`] of every span, `(spans,)`, `chunk_size` spans at a time under activation checkpointing."""
    device = student.hidden.device
    s_first, t_first = student.first, teacher.first.to(teacher.hidden.device)
    rows = (student.hidden[s_first], teacher.hidden[t_first].to(device), student.ids[s_first],
            teacher.ids[t_first].to(device), student.span_logprobs, teacher.span_logprobs.to(device))  # fmt: skip
    return torch.cat(checkpointed_chunks(_span_chunk, rows, chunk_size, *heads, bridge, options))


def _span_chunk(h_s, h_t, s_first, t_first, s_span, t_span, student_head, teacher_head, bridge, options):
    return span_divergence(h_s, student_head, h_t, teacher_head, (s_first, t_first, s_span, t_span), bridge, options)


def _place(spans, student: SpanSide, aligned: AlignedBatch, mask, device):
    """Scatters the span divergences to their first student token and the token entropies to their tokens."""
    valid = (aligned.student_spans >= 0).reshape(-1).to(device)
    token_index = valid.nonzero().squeeze(-1)
    flat_mask = (mask.reshape(-1).to(device) != 0).float()
    divergence = torch.zeros(valid.shape, device=device, dtype=torch.float32)
    entropy = divergence.clone()
    if len(spans):
        first = token_index[student.first]
        divergence = divergence.index_put((first,), spans.float() * flat_mask[first])
        entropy = entropy.index_put((token_index,), student.entropy.detach().float() * flat_mask[token_index])
    return divergence.view(mask.shape), entropy.view(mask.shape)


# ---------------------------------------------------------------------------------------------------- diagnostics
SPAN_DIAGNOSTIC_KEYS = ("forward_kl", "reverse_kl", "js", "top1_agreement", "gap")


def _completion_hidden(model, input_ids, attention_mask, keep: int) -> torch.Tensor:
    """Final hidden states that predict the last `keep` tokens (prompt left-padded, completion right-padded)."""
    out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    return out.hidden_states[-1][:, -keep - 1 : -1]


@torch.no_grad()
def span_diagnostics(student, teacher, bridge: TeacherTokenizerBridge, texts, prompts, temperature: float = 1.0):
    """[`~trl_distill.evaluation.diagnostics.token_diagnostics`] on aligned spans, for a teacher with its own
    tokenizer: forward KL, reverse KL and JS between the two sides' coarsened distributions at each span's first token
    (see [`coarsened_logprobs`]), top-1 agreement on those shared outcomes, and the span gap
    `|log T(span) − log S(span)|`; span-weighted means. With one tokenizer every span is one token and the first four
    equal `token_diagnostics`' (tested).

    Args:
        student, teacher ([`~transformers.PreTrainedModel`]): the two causal LMs.
        bridge ([`TeacherTokenizerBridge`]): the pair's bridge (student tokenizer, teacher tokenizer).
        texts (`list[str]`): completions to score, each followed by the student's end of turn (aligned with the
            teacher's).
        prompts (`list[str | list[dict]]`): one prompt per completion, rendered with each side's own template.
        temperature (`float`, defaults to 1.0): softmax temperature of both models.

    Returns:
        `dict`: a float per key of `SPAN_DIAGNOSTIC_KEYS`, `"num_spans"` and `"multi_token_spans"` (the fraction of
        spans with several tokens on a side).
    """
    tokenizer = bridge.student_tokenizer
    device = next(student.parameters()).device
    prompt_rows = [tokenizer(render_messages(tokenizer, p), add_special_tokens=False)["input_ids"] for p in prompts]
    end = [end_of_turn_id(tokenizer)]  # each completion is scored as a finished answer, closed by the end of turn
    rows = [torch.tensor(tokenizer(t, add_special_tokens=False)["input_ids"] + end, dtype=torch.long) for t in texts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = pad_sequence(rows, batch_first=True, padding_value=pad)
    mask = pad_sequence([torch.ones_like(r) for r in rows], batch_first=True, padding_value=0)
    aligned = bridge.align(prompts, ids, mask, prompt_rows)
    prompt_ids = pad_sequence([torch.tensor(r) for r in prompt_rows], True, pad, padding_side="left")
    prompt_mask = pad_sequence([torch.ones(len(r), dtype=torch.long) for r in prompt_rows], True, 0, "left")
    hidden_s = _completion_hidden(
        student, torch.cat([prompt_ids, ids], 1).to(device), torch.cat([prompt_mask, mask], 1).to(device), ids.size(1)
    )
    hidden_t = _completion_hidden(teacher, aligned.input_ids.to(device), aligned.attention_mask.to(device),
                                  aligned.logits_to_keep)  # fmt: skip
    head_s, head_t = LMHead.of(student), LMHead.of(teacher)
    s = span_side(hidden_s, head_s, ids, aligned.student_spans, aligned.num_spans, temperature)
    t = span_side(hidden_t, head_t, aligned.completion_ids, aligned.teacher_spans, aligned.num_spans, temperature)
    log_ps = F.log_softmax(head_s.logits(s.hidden[s.first]) / temperature, dim=-1)
    log_pt = F.log_softmax(head_t.logits(t.hidden[t.first]) / temperature, dim=-1)
    s_pos, t_pos = bridge.positions(log_ps.device)
    first_positions = torch.stack([s_pos[s.ids[s.first]], t_pos[t.ids[t.first]]], dim=-1)
    coarse_s = coarsened_logprobs(log_ps, bridge.student_matched.to(device), first_positions, s.span_logprobs)
    coarse_t = coarsened_logprobs(log_pt, bridge.teacher_matched.to(device), first_positions, t.span_logprobs)
    values = {
        "forward_kl": generalized_jsd_from_logits(coarse_s, coarse_t, 0.0),
        "reverse_kl": generalized_jsd_from_logits(coarse_s, coarse_t, 1.0),
        "js": generalized_jsd_from_logits(coarse_s, coarse_t, 0.5),
        "top1_agreement": (coarse_s.argmax(-1) == coarse_t.argmax(-1)).float(),
        "gap": (t.span_logprobs - s.span_logprobs).abs(),
    }
    sizes = torch.bincount(s.spans, minlength=len(s.first)), torch.bincount(t.spans, minlength=len(t.first))
    result = {key: value.float().mean().item() for key, value in values.items()}
    result["num_spans"] = len(s.first)
    result["multi_token_spans"] = ((sizes[0] > 1) | (sizes[1] > 1)).float().mean().item()
    return result
