"""The interface every RSE/ICE judge implements ([`Judge`]), and the two checks all judges share on their inputs."""

from collections.abc import Sequence

from .identity import IdentityFact
from .rubrics import IdentityVerdict, SimilarityScore


class Judge:
    """
    Base class of all judges. Subclasses implement [`Judge.score_similarity`] (RSE), [`Judge.judge_identity`] (ICE),
    or both.

    Attributes:
        name (`str`): short name reported with the results.
        comparable_to_llm_judges (`bool`): whether scores sit on the LLM-judge scale (`False` for automatic judges).
        failures (`list[dict]`): one entry per item the judge gave up on (`index`, `reason`, `reply`).
    """

    name = "judge"
    comparable_to_llm_judges = True

    def __init__(self):
        self.failures: list[dict] = []

    @property
    def num_failures(self) -> int:
        return len(self.failures)

    def score_similarity(
        self, prompts: Sequence, responses: Sequence[str], references: Sequence[str]
    ) -> list[SimilarityScore | None]:
        """
        Scores each response against the reference response to the same prompt.

        Args:
            prompts (`Sequence[str | list[dict]]`): the prompts both models answered.
            responses (`Sequence[str]`): responses of the model under test.
            references (`Sequence[str]`): responses of the reference model.

        Returns:
            `list[SimilarityScore | None]`: one score per pair, `None` where the judge failed.
        """
        raise NotImplementedError(f"{type(self).__name__} does not score response similarity (RSE).")

    def judge_identity(
        self, prompts: Sequence, responses: Sequence[str], identity: IdentityFact
    ) -> list[IdentityVerdict | None]:
        """
        Decides for each response whether it conflicts with the model's identity.

        Args:
            prompts (`Sequence[str]`): the (templated) identity questions.
            responses (`Sequence[str]`): the model's responses.
            identity (`IdentityFact`): the model's true identity.

        Returns:
            `list[IdentityVerdict | None]`: one verdict per response, `None` where the judge failed.
        """
        raise NotImplementedError(f"{type(self).__name__} does not judge identity consistency (ICE).")


def prompt_text(prompt) -> str:
    """A prompt as the text a judge reads: a string as it is, a conversation as one `role: content` line per turn."""
    if isinstance(prompt, str):
        return prompt
    # conversational prompt: show the turns as text
    return "\n".join(f"{m.get('role', 'user')}: {m.get('content', '')}" for m in prompt)


def check_lengths(**columns: Sequence) -> None:
    """Raises a `ValueError` naming each column's length unless all columns (prompts, responses, ...) align."""
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{name}={n}" for name, n in lengths.items())
        raise ValueError(f"Judge inputs must be aligned one-to-one, got lengths {detail}.")
