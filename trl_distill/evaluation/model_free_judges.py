"""Model-free judges: [`AutomaticJudge`] (RSE from lexical/embedding similarity) and [`IdentityClaimJudge`] (ICE from
first-person identity claims)."""

import re
from collections.abc import Mapping, Sequence

from .identity import IdentityMatcher, as_identity_fact
from .judge_base import Judge, check_lengths
from .rubrics import IdentityVerdict, SimilarityScore


class _UnicodeWordTokenizer:
    """Lower-cased word tokens; every CJK character is a token (rouge-score's default drops non-ASCII text)."""

    _token = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]|[^\W_]+", re.UNICODE)

    def tokenize(self, text: str) -> list[str]:
        return self._token.findall(text.casefold())


class AutomaticJudge(Judge):
    """
    A model-free RSE judge: the mean of ROUGE-L F1, chrF and (optionally) embedding cosine, each in [0, 1], mapped
    linearly to the 1–5 scale:

        overall = 1 + 4 · mean(ROUGE-L F1, chrF / 100[, max(cos, 0)])

    Aspects (style, logic, content) are not rated (`None`). Scores rank models against one reference but are **not
    comparable to LLM-judge scores** (or to the paper's numbers): lexical overlap is low even for paraphrases an LLM
    judge rates 4.

    Args:
        use_rouge (`bool`, *optional*, defaults to `True`):
            Include ROUGE-L F1 (`rouge-score`, Unicode-aware word tokens, no stemming).
        use_chrf (`bool`, *optional*, defaults to `True`):
            Include chrF (`sacrebleu`).
        embedding_model (`str` or `Callable[[list[str]], torch.Tensor]`, *optional*):
            Adds the cosine of sentence embeddings: a `sentence-transformers` model name, or a function mapping texts
            to a `(N, D)` tensor.
    """

    name = "auto"
    comparable_to_llm_judges = False

    def __init__(self, use_rouge: bool = True, use_chrf: bool = True, embedding_model=None):
        super().__init__()
        if not (use_rouge or use_chrf or embedding_model is not None):
            raise ValueError("AutomaticJudge needs at least one of ROUGE-L, chrF or an embedding model.")
        self.use_rouge = use_rouge
        self.use_chrf = use_chrf
        try:
            if use_rouge:
                from rouge_score import rouge_scorer

                self._rouge = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_UnicodeWordTokenizer())
            if use_chrf:
                from sacrebleu.metrics import CHRF

                self._chrf = CHRF()
        except ImportError as error:
            raise ImportError(
                f"AutomaticJudge needs `rouge-score` and `sacrebleu` ({error}). Install them with "
                "`pip install 'trl-distill[eval]'`, or disable the metric with use_rouge=False / use_chrf=False."
            ) from error
        if isinstance(embedding_model, str):
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as error:
                raise ImportError(
                    "A sentence-embedding model name needs `sentence-transformers`: `pip install sentence-transformers`, "
                    "or pass a function that maps texts to embeddings."
                ) from error
            encoder = SentenceTransformer(embedding_model)
            self._embed = lambda texts: encoder.encode(texts, convert_to_tensor=True)
        else:
            self._embed = embedding_model
        parts = [n for n, on in (("rougeL", use_rouge), ("chrF", use_chrf), ("cos", embedding_model)) if on]
        self.name = "auto(" + "+".join(parts) + ")"

    def similarities(self, responses: Sequence[str], references: Sequence[str]) -> list[dict[str, float]]:
        """
        The raw similarities in [0, 1] of each pair: `rougeL`, `chrF` and `cos`, whichever are enabled.

        Args:
            responses (`Sequence[str]`): texts to score.
            references (`Sequence[str]`): reference texts, aligned with `responses`.

        Returns:
            `list[dict[str, float]]`: one dict per pair.
        """
        rows = [{} for _ in responses]
        for row, response, reference in zip(rows, responses, references):
            if self.use_rouge:
                row["rougeL"] = self._rouge.score(reference, response)["rougeL"].fmeasure
            if self.use_chrf:
                row["chrF"] = self._chrf.sentence_score(response, [reference]).score / 100.0
        if self._embed is not None and len(rows):
            import torch

            a = torch.as_tensor(self._embed(list(responses))).float()
            b = torch.as_tensor(self._embed(list(references))).float()
            cos = torch.nn.functional.cosine_similarity(a, b, dim=-1).clamp(min=0.0)
            for row, value in zip(rows, cos.tolist()):
                row["cos"] = value
        return rows

    def score_similarity(self, prompts, responses, references):
        check_lengths(prompts=prompts, responses=responses, references=references)
        scores = []
        for response, reference, row in zip(responses, references, self.similarities(responses, references)):
            if response.strip() == reference.strip():
                similarity = 1.0  # both metrics are undefined on two empty texts; identical texts are identical
            else:
                similarity = sum(row.values()) / len(row)
            # overall = 1 + 4·similarity: the linear map of [0, 1] onto the 1–5 RSE scale
            scores.append(SimilarityScore(overall=1.0 + 4.0 * similarity))
        return scores


class IdentityClaimJudge(Judge):
    """
    A model-free ICE judge: a response conflicts with the model's identity when it makes a first-person claim ("I am
    ...", "I was trained by ...", "my developer is ...", "我是...", "...开发了我") naming a known model or organisation
    other than the model's own. Every such claim also counts as claiming another model (`Strict`): the known
    organisations are model makers, and docs/methods.md §5 counts another model's maker claimed as one's creator ("I was
    trained by Anthropic") as claiming another model, as the LLM judges' rubric ([`ICE_RUBRIC`]) says. Both judges
    are checked on the same table of cases, `trl_distill.evaluation.identity_cases.IDENTITY_CASES`.

    Rule-based, so it misses paraphrased claims and false statements about team, location or partners that name no
    one; use an LLM judge for those.

    Args:
        known_identities (`Mapping[str, Mapping[str, list[str]]]`, *optional*):
            `{group: {"organisation": [...], "model": [...]}}`; defaults to
            [`~trl_distill.evaluation.identity.DEFAULT_KNOWN_IDENTITIES`]. Groups containing any of the model's own
            names are ignored.
    """

    name = "identity-claims"

    def __init__(self, known_identities: Mapping | None = None):
        super().__init__()
        self.known_identities = known_identities

    def judge_identity(self, prompts, responses, identity):
        check_lengths(prompts=prompts, responses=responses)
        matcher = IdentityMatcher(self.known_identities, as_identity_fact(identity))
        verdicts = []
        for i, response in enumerate(responses):
            if not isinstance(response, str):
                raise ValueError(
                    f"Response {i} is {response!r} ({type(response).__name__}), not text; a missing answer is neither "
                    "consistent nor a conflict. Drop the item, or pass '' if the model really answered nothing."
                )
            claims = matcher.claims(response)
            model_claims = [c for c in claims if c.kind == "model"]
            verdicts.append(
                IdentityVerdict(
                    conflict=bool(claims),
                    # another model, or another model's maker claimed as one's creator (docs/methods.md §5)
                    claims_other_model=bool(claims),
                    claimed_name=(model_claims or claims)[0].name if claims else None,
                )
            )
        return verdicts
