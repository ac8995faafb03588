"""The one completion parser, shared by rewards, evaluation and serving.

`parse_completion` splits a completion into reasoning and answer and judges the format;
`resolve_answer` turns the answer into a taxonomy node (open mode: free-text name; choice mode: the
option letter). Neither raises on any string, and both stay cheap: the reward actor calls them
~10^5 times a second, so the format check uses `str.count`/`str.find` rather than regexes over
the whole completion, and regexes only ever see the (length-capped) answer.

Content is read whenever there is exactly one complete answer block, even if the format is
otherwise wrong (stray text, missing reasoning): format and accuracy are separate reward terms, as
in the paper. Two answer blocks yield no answer at all, so hedging across answers never pays.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

from skinr1.prompts.choice import ChoiceOption
from skinr1.prompts.format import DEFAULT_FORMAT, LETTER_PREFIX, OPTION_LETTERS, AnswerFormat, check_mode
from skinr1.taxonomy import MALIGNANCY_CLASSES, LabelResolver, Taxonomy, normalize_label

OK = "ok"

# Spellings a model may use for each malignancy class, normalised (see normalize_label).
_MALIGNANCY_SPELLINGS = {
    "benign": "benign",
    "precancerous": "precancerous",
    "pre cancerous": "precancerous",
    "premalignant": "precancerous",
    "pre malignant": "precancerous",
    "malignant": "malignant",
    "non neoplastic": "non-neoplastic",
    "nonneoplastic": "non-neoplastic",
}
assert set(_MALIGNANCY_SPELLINGS.values()) == set(MALIGNANCY_CLASSES)

# A parenthetical at the very end of the answer, optionally followed by a full stop.
_TRAILING_PAREN = re.compile(r"\(([^()]*)\)[\s.]*$")
# The first capital option letter standing alone ("B. ...", "(B)", "option B"); lower-case "a" is
# an article, so letters are case-sensitive.
_CHOICE_LETTER = re.compile(rf"(?<![A-Za-z0-9])([{OPTION_LETTERS}])(?![A-Za-z0-9])")


@dataclass(slots=True)
class ParsedCompletion:
    """What a completion says, and whether it follows the answer format."""

    format_ok: bool
    """True when the completion is exactly one non-empty reasoning block then one answer block."""
    format_reason: str
    """"ok" or the first format violation found (e.g. "missing_reasoning", "text_outside_tags")."""
    reasoning: str
    """Text of the reasoning block (best effort when the format is broken; "" when absent)."""
    answer_text: str
    """Stripped content of the single answer block; "" when there is none (see `answer_reason`)."""
    stated_malignancy: str | None
    """Malignancy class in the answer's trailing parentheses, canonical spelling, or None."""
    choice_letter: str | None
    """First option letter (A-D) written in the answer, or None."""
    diagnosis: str = ""
    """The answer without option letter and malignancy suffix: the disease name to resolve."""
    answer_reason: str = OK
    """"ok", or why `answer_text` is empty ("missing_answer", "duplicate_answer", "answer_too_long"...)."""


def _failed(reason: str, reasoning: str = "") -> ParsedCompletion:
    return ParsedCompletion(False, reason, reasoning, "", None, None, "", reason)


def _blank(segment: str) -> bool:
    return not segment or segment.isspace()


def parse_completion(text: str, fmt: AnswerFormat = DEFAULT_FORMAT) -> ParsedCompletion:
    """Parse one completion. Never raises; a non-string is read as its `str()`."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    if _blank(text):
        return _failed("empty")
    if len(text) > fmt.max_completion_chars:
        return _failed("completion_too_long")
    fast = _well_formed_fast(text, fmt)
    if fast is not None:
        return fast
    return _parse_slow(text, fmt)


def _well_formed_fast(text: str, fmt: AnswerFormat) -> ParsedCompletion | None:
    """The common case, a well-formed completion, in a few cheap scans; None means "look closer".

    Tags are searched from the ends (`rfind` for the answer, which sits at the end), and the gaps
    between them are checked for any "<" with a memchr-speed single-character `find`: with no other
    "<" anywhere, each tag occurs exactly once, which otherwise costs four full `count` scans.
    """
    ro, rc, ao, ac = fmt.reasoning_open, fmt.reasoning_close, fmt.answer_open, fmt.answer_close
    ro_i = text.find(ro)
    ac_i = text.rfind(ac)
    if ro_i < 0 or ac_i < 0:
        return None
    ao_i = text.rfind(ao, 0, ac_i)
    rc_i = text.rfind(rc, 0, ao_i) if ao_i >= 0 else -1
    r_start, a_start, a_end = ro_i + len(ro), ao_i + len(ao), ac_i + len(ac)
    if rc_i < r_start or ac_i - a_start > fmt.max_answer_chars:
        return None
    for start, end in ((0, ro_i), (r_start, rc_i), (rc_i + len(rc), ao_i), (a_start, ac_i), (a_end, len(text))):
        if text.find("<", start, end) >= 0:
            return None
    if not (_blank(text[:ro_i]) and _blank(text[rc_i + len(rc):ao_i]) and _blank(text[a_end:])):
        return None
    reasoning = text[r_start:rc_i]
    answer = text[a_start:ac_i].strip()
    if not answer or _blank(reasoning):
        return None
    diagnosis, malignancy, letter = _split_answer(answer)
    return ParsedCompletion(True, OK, reasoning, answer, malignancy, letter, diagnosis, OK)


def _parse_slow(text: str, fmt: AnswerFormat) -> ParsedCompletion:
    """Any completion: finds the first violation and still extracts whatever can be read."""
    ro, rc, ao, ac = fmt.reasoning_open, fmt.reasoning_close, fmt.answer_open, fmt.answer_close
    ro_i, rc_i, ao_i, ac_i = text.find(ro), text.find(rc), text.find(ao), text.find(ac)

    answer_reason, answer, answer_start = OK, "", ao_i + len(ao)
    if ao_i < 0:
        answer_reason = "missing_answer"
    elif text.count(ao) > 1 or text.count(ac) > 1:
        answer_reason = "duplicate_answer"
    elif ac_i < answer_start:
        answer_reason = "unclosed_answer"
    elif ac_i - answer_start > fmt.max_answer_chars:
        answer_reason = "answer_too_long"
    else:
        answer = text[answer_start:ac_i].strip()
        if not answer:
            answer_reason = "empty_answer"

    if ro_i < 0:
        reasoning_reason, reasoning = "missing_reasoning", ""
    else:
        start = ro_i + len(ro)
        end = text.find(rc, start)
        if text.count(ro) > 1 or text.count(rc) > 1:
            reasoning_reason = "duplicate_reasoning"
        elif end < 0:
            reasoning_reason = "unclosed_reasoning"
        else:
            reasoning_reason = OK
        if end < 0:  # unclosed: the reasoning runs up to the answer (or the end)
            end = ao_i if ao_i > start else len(text)
        reasoning = text[start:end]
        if reasoning_reason == OK and _blank(reasoning):
            reasoning_reason = "empty_reasoning"

    format_reason = _format_reason(text, fmt, reasoning_reason, answer_reason, ro_i, rc_i, ao_i, ac_i)
    if not answer:
        return ParsedCompletion(False, format_reason, reasoning, "", None, None, "", answer_reason)
    diagnosis, malignancy, letter = _split_answer(answer)
    return ParsedCompletion(format_reason == OK, format_reason, reasoning, answer, malignancy, letter, diagnosis, OK)


def _format_reason(
    text: str, fmt: AnswerFormat, reasoning_reason: str, answer_reason: str, ro_i: int, rc_i: int, ao_i: int, ac_i: int
) -> str:
    # Structural problems first: they explain everything that follows from them.
    for reason in (reasoning_reason, answer_reason):
        if reason not in (OK, "empty_reasoning", "empty_answer", "answer_too_long"):
            return reason
    if ao_i < ro_i:
        return "answer_before_reasoning" if ac_i < ro_i else "nested_tags"
    if ao_i < rc_i:
        return "nested_tags"
    if not (_blank(text[:ro_i]) and _blank(text[rc_i + len(fmt.reasoning_close):ao_i]) and _blank(text[ac_i + len(fmt.answer_close):])):
        return "text_outside_tags"
    for reason in (reasoning_reason, answer_reason):
        if reason != OK:
            return reason
    return OK


@lru_cache(maxsize=4096)
def _split_answer(answer: str) -> tuple[str, str | None, str | None]:
    """(diagnosis, stated malignancy, choice letter) of an answer; cached because answers repeat."""
    malignancy = None
    diagnosis = answer
    paren = _TRAILING_PAREN.search(answer)
    if paren:
        malignancy = _malignancy_class(paren.group(1))
        if malignancy is not None:
            diagnosis = answer[: paren.start()]
    letter_match = _CHOICE_LETTER.search(answer)
    letter = letter_match.group(1) if letter_match else None
    diagnosis = LETTER_PREFIX.sub("", diagnosis, count=1).strip()
    return diagnosis, malignancy, letter


def _malignancy_class(text: str) -> str | None:
    return _MALIGNANCY_SPELLINGS.get(normalize_label(text))


def resolve_answer(
    parsed: ParsedCompletion,
    resolver: Taxonomy | LabelResolver,
    mode: str,
    options: Sequence[ChoiceOption] | None = None,
    find: Callable[[str], str | None] | None = None,
) -> tuple[str | None, str]:
    """The node the answer names, and a reason code ("resolved", "chosen", "unresolved", "no_choice"...).

    Open mode matches the diagnosis against the taxonomy's names and synonyms (model answers are
    free text, never a dataset's vocabulary). Choice mode uses only the option letter: the letter
    is the model's decision, the name after it is decoration. `find` replaces `taxonomy.find`
    (the scorer passes a cached one).
    """
    if not parsed.answer_text:
        return None, parsed.answer_reason
    if check_mode(mode) == "choice":
        if parsed.choice_letter is None:
            return None, "no_choice"
        for option in options or ():
            if option.letter == parsed.choice_letter:
                return option.node_id, "chosen"
        return None, "invalid_choice"
    if find is None:
        find = (resolver.taxonomy if isinstance(resolver, LabelResolver) else resolver).find
    node_id = find(parsed.diagnosis)
    if node_id is None:
        # "melanoma (superficial spreading)": a qualifier we do not model; try the name alone.
        paren = _TRAILING_PAREN.search(parsed.diagnosis)
        if paren and paren.start() > 0:
            node_id = find(parsed.diagnosis[: paren.start()])
    return (node_id, "resolved") if node_id is not None else (None, "unresolved")
