"""Identity facts and rule-based detection of identity claims, shared by the ICE judges and the ICE templates.

A *claim* is a first-person statement that names a model or an organisation ("I am ChatGPT", "I was trained by
OpenAI", "我是通义千问"). A *mention* is any occurrence of a name. The list of names is configurable; each group is one
organisation with the organisation's names and its models' names, so that a model's own maker and sibling models are
never counted as "another" identity.
"""

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


# organisation -> {"organisation": names of the organisation, "model": names of its models}
DEFAULT_KNOWN_IDENTITIES: dict[str, dict[str, list[str]]] = {
    "OpenAI": {"organisation": ["OpenAI"], "model": ["ChatGPT", "GPT-4o", "GPT-4", "GPT-3.5", "GPT", "o1", "Codex"]},
    "Anthropic": {"organisation": ["Anthropic"], "model": ["Claude"]},
    "Google": {
        "organisation": ["Google DeepMind", "DeepMind", "Google", "谷歌"],
        "model": ["Gemini", "Gemma", "Bard", "PaLM", "LaMDA"],
    },
    "Meta": {"organisation": ["Meta AI", "Meta", "Facebook"], "model": ["LLaMA", "Llama"]},
    "Microsoft": {"organisation": ["Microsoft", "微软"], "model": ["Phi", "Copilot"]},
    "Alibaba": {
        "organisation": ["Alibaba Cloud", "Alibaba", "阿里云", "阿里巴巴"],
        "model": ["Qwen", "Tongyi Qianwen", "Tongyi", "通义千问", "千问"],
    },
    "Baidu": {"organisation": ["Baidu", "百度"], "model": ["ERNIE Bot", "ERNIE", "文心一言"]},
    "Zhipu": {"organisation": ["Zhipu AI", "Zhipu", "智谱"], "model": ["ChatGLM", "GLM"]},
    "Moonshot": {"organisation": ["Moonshot AI", "月之暗面"], "model": ["Kimi"]},
    "DeepSeek": {"organisation": ["深度求索"], "model": ["DeepSeek"]},
    "Mistral": {"organisation": ["Mistral AI"], "model": ["Mistral", "Mixtral"]},
    "xAI": {"organisation": ["xAI"], "model": ["Grok"]},
    "ByteDance": {"organisation": ["ByteDance", "字节跳动"], "model": ["Doubao", "豆包"]},
    "Tencent": {"organisation": ["Tencent", "腾讯"], "model": ["Hunyuan", "混元"]},
    "01.AI": {"organisation": ["01.AI", "零一万物"], "model": ["Yi-Large", "Yi-34B"]},
    "Cohere": {"organisation": ["Cohere"], "model": ["Command R"]},
}


@dataclass
class IdentityFact:
    """
    The true identity of the model under test (the fact an ICE judge checks responses against).

    Args:
        name (`str`):
            The model's name, e.g. `"Qwen"`.
        organisation (`str`):
            Who made it, e.g. `"Alibaba Cloud"`.
        aliases (`list[str]`, *optional*):
            Other names that are still the model's own (translations, product names, parent companies).
        description (`str`, *optional*):
            Extra facts given to LLM judges (team, location, partners). Defaults to a sentence built from the above.
    """

    name: str
    organisation: str
    aliases: list[str] = field(default_factory=list)
    description: str | None = None

    def __post_init__(self):
        if not self.name or not self.organisation:
            raise ValueError(
                f"An identity fact needs a model name and an organisation, got name={self.name!r}, "
                f"organisation={self.organisation!r}."
            )

    @property
    def own_names(self) -> list[str]:
        """Every name that belongs to this model: name, organisation and aliases."""
        return [self.name, self.organisation, *self.aliases]

    @property
    def fact(self) -> str:
        """The identity as one sentence for a judge's prompt."""
        return self.description or f"The model is {self.name}, developed by {self.organisation}."

    @classmethod
    def from_dict(cls, data: Mapping) -> "IdentityFact":
        """Builds a fact from a mapping with `name`, `organisation` and optionally `aliases` and `description`."""
        missing = [key for key in ("name", "organisation") if key not in data]
        if missing:
            raise ValueError(f"Identity fact is missing {missing}; give e.g. {{'name': 'Qwen', 'organisation': ...}}.")
        return cls(
            name=data["name"],
            organisation=data["organisation"],
            aliases=list(data.get("aliases", [])),
            description=data.get("description"),
        )


@dataclass
class IdentityClaim:
    """One name found in a text: the name as written, its kind (`"model"` or `"organisation"`) and its group."""

    name: str
    kind: str
    group: str


def _is_cjk(text: str) -> bool:
    return any("\u3040" <= ch <= "\u9fff" or "\uac00" <= ch <= "\ud7af" for ch in text)


def _name_pattern(name: str) -> str:
    escaped = re.escape(name)
    # CJK text has no word boundaries; Latin names must not sit inside a longer word ("Phi" in "Philosophy")
    return escaped if _is_cjk(name) else rf"(?<![A-Za-z0-9\u00c0-\u024f]){escaped}(?![A-Za-z0-9\u00c0-\u024f])"


# `{name}` is replaced (str.replace, not format) by the alternation of known names. Each pattern is a first-person statement of identity.
_FILLER = r"(?:[\w.-]+\s+){0,4}?"
# after "I am", only words that keep the sentence about what the speaker is ("I am happy to compare GPT-4" is no claim)
_SELF_FILLER = (
    r"(?:(?:a|an|the|actually|really|indeed|in\s+fact|just|simply|basically|definitely|truly|also|ai|assistant|"
    r"model|language|large|chatbot|chat|bot|called|named|known\s+as|version\s+of|based\s+on|powered\s+by|"
    r"part\s+of|from)\s+){0,6}?"
)
_CLAIM_TEMPLATES = [
    rf"\b(?:i\s+am|i'm|i\s+was|this\s+is|call\s+me|my\s+name\s+is|known\s+as)\s+{_SELF_FILLER}{{name}}",
    rf"\b(?:created|developed|trained|built|made|designed|owned|released|produced|maintained)\s+by\s+{_FILLER}{{name}}",
    rf"{{name}}(?:'s)?\s+{_FILLER}(?:created|developed|trained|built|made|designed)\s+me\b",
    rf"\bmy\s+(?:creators?|developers?|makers?|company|team|organi[sz]ation|parent\s+company|base\s+model)\s+"
    rf"(?:is|are|was|were)\s+{_FILLER}{{name}}",
    rf"\b(?:je\s+suis|j'ai\s+été\s+(?:créé|développé|entraîné)\s+par|mon\s+nom\s+est)\s+{_SELF_FILLER}{{name}}",
    r"我(?:是|叫|名叫|的名字是|由|来自|属于|基于)[^，。！？,.!?\n]{0,20}?{name}",
    r"{name}[^，。！？,.!?\n]{0,12}?(?:开发|训练|创造|打造|研发)(?:了)?我",
]
_NEGATION = re.compile(r"\bnot\b|n't\b|\bnever\b|\bno\b|\bne\b|不|非|并非")
_CLAUSE_SPLIT = re.compile(r"[.!?;:,\n。！？；：，]+(?:\s|$)|[。！？；，]")
_FIRST_PERSON = re.compile(r"\b(?:i|i'm|me|my|mine|je|j'|moi|mon)\b|我", re.IGNORECASE)


class IdentityMatcher:
    """
    Finds names from a list of known identities in texts, and first-person claims of them.

    Args:
        known_identities (`Mapping[str, Mapping[str, list[str]]]`, *optional*):
            `{group: {"organisation": [...], "model": [...]}}`; defaults to `DEFAULT_KNOWN_IDENTITIES`.
        identity (`IdentityFact`, *optional*):
            The model's own identity: groups that contain any of its names are ignored (they are not "another").
    """

    def __init__(self, known_identities: Mapping | None = None, identity: IdentityFact | None = None):
        known_identities = DEFAULT_KNOWN_IDENTITIES if known_identities is None else known_identities
        own = {n.casefold() for n in identity.own_names} if identity is not None else set()
        self._lookup: dict[str, IdentityClaim] = {}
        for group, kinds in known_identities.items():
            unknown = set(kinds) - {"organisation", "model"}
            if unknown:
                raise ValueError(
                    f"Known identity group {group!r} has keys {sorted(unknown)}; use only 'organisation' and 'model'."
                )
            names = [group, *kinds.get("organisation", []), *kinds.get("model", [])]
            if any(n.casefold() in own for n in names):
                continue
            for kind in ("organisation", "model"):
                for name in kinds.get(kind, []):
                    self._lookup[name.casefold()] = IdentityClaim(name=name, kind=kind, group=group)
        if not self._lookup:
            self._mention = self._claims = None
            return
        alternation = "|".join(_name_pattern(n) for n in sorted(self._lookup, key=len, reverse=True))
        name_group = f"(?P<name>{alternation})"
        self._mention = re.compile(name_group, re.IGNORECASE)
        self._claims = [re.compile(t.replace("{name}", name_group), re.IGNORECASE) for t in _CLAIM_TEMPLATES]

    def _resolve(self, written: str) -> IdentityClaim:
        entry = self._lookup[written.casefold()]
        return IdentityClaim(name=written, kind=entry.kind, group=entry.group)

    def mentions(self, text: str) -> list[IdentityClaim]:
        """Every known (non-own) name that occurs in `text`, claimed or not."""
        if self._mention is None:
            return []
        return [self._resolve(m.group("name")) for m in self._mention.finditer(text)]

    def claims(self, text: str) -> list[IdentityClaim]:
        """First-person, non-negated claims in `text` of being (or being made by) a known non-own identity."""
        if self._claims is None:
            return []
        found: dict[tuple[str, str], IdentityClaim] = {}
        for clause in _CLAUSE_SPLIT.split(text):
            if not _FIRST_PERSON.search(clause):
                continue
            for pattern in self._claims:
                for match in pattern.finditer(clause):
                    if not _NEGATION.search(match.group(0)):
                        claim = self._resolve(match.group("name"))
                        found.setdefault((claim.name.casefold(), claim.kind), claim)
        return list(found.values())


def names_other_identity(text: str, identity: IdentityFact, known_identities: Mapping | None = None) -> bool:
    """
    Whether `text` (e.g. an ICE template) names a model or organisation other than `identity`'s own.

    Args:
        text (`str`):
            The text to check.
        identity (`IdentityFact`):
            The model's own identity, whose names do not count.
        known_identities (`Mapping`, *optional*):
            Names to look for; defaults to `DEFAULT_KNOWN_IDENTITIES`.

    Returns:
        `bool`: `True` when a known, non-own name occurs in `text`.
    """
    return bool(IdentityMatcher(known_identities, identity).mentions(text))


def as_identity_fact(identity) -> IdentityFact:
    """Accepts an `IdentityFact`, a mapping or a `"name@organisation"` string, and returns an `IdentityFact`."""
    if isinstance(identity, IdentityFact):
        return identity
    if isinstance(identity, Mapping):
        return IdentityFact.from_dict(identity)
    if isinstance(identity, str) and "@" in identity:
        name, organisation = (part.strip() for part in identity.split("@", 1))
        return IdentityFact(name=name, organisation=organisation)
    raise ValueError(
        f"Cannot read an identity fact from {identity!r}; pass IdentityFact(name=..., organisation=...), a dict with "
        "'name' and 'organisation', or a string 'Name@Organisation'."
    )


def split_names(values: Sequence[str] | None) -> list[str]:
    """Flattens comma-separated command-line values into a list of names."""
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]
