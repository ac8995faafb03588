"""The paper's five multiple-choice evaluations: one pure question builder each, and the letter parser.

Every builder turns one manifest record into a `ProtocolQuestion` (stem, lettered options, the
right letter), or None when the record admits no such question (a depth-1 label has no hierarchy
to climb). Options are shuffled with a generator seeded by (seed, evaluation, record id), so a
record gets the same question on every run and for every checkpoint.

1. omnimedvqa   - OmniMedVQA multiple choice: the record's own question and options A-D when it
                  came from an OmniMedVQA QA file, else the truth plus 3 distractors from the
                  dataset's label pool.
2. in_domain    - the "choice" question mode exactly as SFT/RL ask it (skinr1.prompts.choice);
                  right = the deepest correct option (the one the granularity reward pays in full).
3. malignancy   - benign / precancerous / malignant; non-neoplastic counts as benign.
4. hierarchical - the options are the nodes of the truth's path; right = the deepest (the label).
5. differential - the truth and up to 3 of its DDx neighbours; right = the truth.

`parse_letter` reads an answer the paper's way: the first option letter in the answer block (the
whole completion when there is none); finding none is a parse failure, scored as wrong.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping, Sequence

from rewards.functions import collapse_malignancy, deepest_correct_depth
from skinr1.data.records import Record
from skinr1.prompts import CHOICE_QUESTIONS, DEFAULT_FORMAT, AnswerFormat, build_messages, format_options, parse_completion
from skinr1.prompts.choice import is_related, make_choice_options
from skinr1.prompts.questions import record_seed
from skinr1.taxonomy import Taxonomy, normalize_label
from skinr1.trajectories.ddx import ddx_neighbours

EVALUATIONS = ("omnimedvqa", "in_domain", "malignancy", "hierarchical", "differential")
"""The paper's evaluations, in the order of its tables."""

PROTOCOL_LETTERS = "ABCDEFGH"
"""Option letters; the hierarchical evaluation offers one option per level (up to 6 in the taxonomy)."""

OMNIMEDVQA_OPTIONS = 4
"""Options of a built OmniMedVQA-style question: the truth and 3 distractors."""

MAX_DDX_OPTIONS = 3
"""DDx neighbours offered next to the truth in the differential evaluation."""

THREE_CLASSES = ("benign", "precancerous", "malignant")
"""The malignancy evaluation's options (taxonomy classes collapsed to three, as the paper scores them)."""

MALIGNANCY_QUESTION = "Is the lesion in this image benign, precancerous or malignant? Choose one option."
HIERARCHY_QUESTION = (
    "The options below describe this lesion at different levels of the disease hierarchy. "
    "Which option is the most specific diagnosis? Choose one option."
)


class ProtocolError(ValueError):
    """A record cannot be asked as its evaluation requires (e.g. its answer is none of its options)."""


@dataclass(frozen=True)
class ProtocolOption:
    """One lettered option as shown to the model."""

    letter: str
    """Option letter (A, B, ...)."""
    name: str
    """Text shown after the letter: a node name, a malignancy class or the dataset's own wording."""
    node_id: str | None = None
    """Taxonomy node the option stands for; None for malignancy classes and OmniMedVQA's own texts."""


@dataclass(frozen=True)
class ProtocolQuestion:
    """One record asked as one of the five evaluations."""

    evaluation: str
    """One of `EVALUATIONS`."""
    record_id: str
    """Record the question is about."""
    image: str
    """Path of the record's image."""
    label: str
    """Ground-truth node id of the record."""
    stem: str
    """Question text before the options."""
    options: tuple[ProtocolOption, ...]
    """Lettered options, in the order shown."""
    answer: str
    """Letter of the right option."""

    @property
    def letters(self) -> str:
        return "".join(option.letter for option in self.options)

    @property
    def text(self) -> str:
        """The user turn: stem, then one "X. name" line per option (the choice mode's layout)."""
        return f"{self.stem}\nOptions:\n{format_options(self.options)}"


def question_messages(question: ProtocolQuestion, fmt: AnswerFormat = DEFAULT_FORMAT,
                      include_system_prompt: bool = True) -> list[dict]:
    """Chat messages in the project's choice format (system prompt, image, question with options)."""
    messages = build_messages("choice", question.options, fmt)
    messages[-1]["content"][-1]["text"] = question.text
    return messages if include_system_prompt else messages[1:]


# ----------------------------------------------------------------------------- builders
def _rng(seed: int, evaluation: str, record_id: str) -> random.Random:
    return random.Random(record_seed(seed, f"{evaluation}:{record_id}"))


def _lettered(entries: Sequence[tuple[str, str | None]]) -> tuple[ProtocolOption, ...]:
    if len(entries) > len(PROTOCOL_LETTERS):
        raise ProtocolError(f"{len(entries)} options, but only {len(PROTOCOL_LETTERS)} letters")
    return tuple(ProtocolOption(letter, name, node) for letter, (name, node) in zip(PROTOCOL_LETTERS, entries))


def _question(evaluation: str, record: Record, stem: str, nodes: Sequence[str], right: str,
              taxonomy: Taxonomy, rng: random.Random) -> ProtocolQuestion:
    """Shuffle taxonomy nodes into lettered options; `right` (one of them) is the answer."""
    shuffled = list(nodes)
    rng.shuffle(shuffled)
    options = _lettered([(taxonomy.node(node).name, node) for node in shuffled])
    return ProtocolQuestion(evaluation, record.record_id, record.image, record.node_id, stem, options,
                            PROTOCOL_LETTERS[shuffled.index(right)])


def _distinct(candidates: Sequence[str], taxonomy: Taxonomy, taken: Sequence[str]) -> list[str]:
    """Candidates minus those whose displayed name equals an earlier one (two identical options)."""
    names = {normalize_label(taxonomy.node(node).name) for node in taken}
    kept = []
    for node in candidates:
        name = normalize_label(taxonomy.node(node).name)
        if name not in names:
            names.add(name)
            kept.append(node)
    return kept


def own_options(record: Record) -> dict[str, str]:
    """An OmniMedVQA record's options {letter: text} (extra.options); {} for any other record."""
    options = record.extra.get("options")
    if not isinstance(options, dict):
        return {}
    return {str(k).strip().upper(): str(v).strip() for k, v in sorted(options.items()) if str(v).strip()}


def omnimedvqa_question(record: Record, taxonomy: Taxonomy, label_pool: Sequence[str], seed: int = 0) -> ProtocolQuestion:
    """Evaluation 1: the record's own OmniMedVQA question, else the truth and 3 pool distractors."""
    given = own_options(record)
    if given:
        return _own_question(record, given)
    rng = _rng(seed, "omnimedvqa", record.record_id)
    label = record.node_id
    pool = sorted({n for n in label_pool if n in taxonomy and not is_related(taxonomy, n, label)})
    distractors = rng.sample(pool, len(pool))
    if len(pool) < OMNIMEDVQA_OPTIONS - 1:  # a small pool: fill with other diseases of the taxonomy
        extra = sorted(n.id for n in taxonomy.leaves() if n.id not in pool and not is_related(taxonomy, n.id, label))
        distractors += rng.sample(extra, len(extra))
    distractors = _distinct(distractors, taxonomy, [label])[: OMNIMEDVQA_OPTIONS - 1]
    stem = CHOICE_QUESTIONS[rng.randrange(len(CHOICE_QUESTIONS))]
    return _question("omnimedvqa", record, stem, [label, *distractors], label, taxonomy, rng)


def _own_question(record: Record, given: Mapping[str, str]) -> ProtocolQuestion:
    letters = "".join(given)
    if letters != PROTOCOL_LETTERS[: len(letters)] or len(letters) < 2:
        raise ProtocolError(f"record {record.record_id}: options {letters!r}: need two or more, consecutive letters from A")
    truth = normalize_label(record.original_label)
    right = [letter for letter, text in given.items() if normalize_label(text) == truth]
    if len(right) != 1:
        raise ProtocolError(f"record {record.record_id}: its answer {record.original_label!r} is "
                            f"{'none' if not right else 'more than one'} of its options {dict(given)}")
    stem = str(record.extra.get("question") or CHOICE_QUESTIONS[0]).strip()
    options = tuple(ProtocolOption(letter, text) for letter, text in given.items())
    return ProtocolQuestion("omnimedvqa", record.record_id, record.image, record.node_id, stem, options, right[0])


def in_domain_question(record: Record, taxonomy: Taxonomy, label_pool: Sequence[str], seed: int = 0) -> ProtocolQuestion:
    """Evaluation 2: the choice mode's question (same options and wording as `make_question`);
    right = the deepest option on the truth's path."""
    rng = random.Random(record_seed(seed, record.record_id))  # make_question's generator, draw for draw
    choices = make_choice_options(taxonomy, record.node_id, sorted(set(label_pool)), rng)
    stem = CHOICE_QUESTIONS[rng.randrange(1 << 16) % len(CHOICE_QUESTIONS)]
    deepest = deepest_correct_depth(taxonomy, [c.node_id for c in choices], record.node_id)
    right = next(c.letter for c in choices
                 if taxonomy.is_ancestor(c.node_id, record.node_id) and taxonomy.depth(c.node_id) == deepest)
    options = tuple(ProtocolOption(c.letter, c.name, c.node_id) for c in choices)
    return ProtocolQuestion("in_domain", record.record_id, record.image, record.node_id, stem, options, right)


def malignancy_question(record: Record, taxonomy: Taxonomy, seed: int = 0) -> ProtocolQuestion:
    """Evaluation 3: benign / precancerous / malignant, shuffled; the truth's class with
    non-neoplastic read as benign."""
    rng = _rng(seed, "malignancy", record.record_id)
    classes = list(THREE_CLASSES)
    rng.shuffle(classes)
    right = collapse_malignancy(taxonomy.malignancy(record.node_id), 3)
    return ProtocolQuestion("malignancy", record.record_id, record.image, record.node_id, MALIGNANCY_QUESTION,
                            _lettered([(c, None) for c in classes]), PROTOCOL_LETTERS[classes.index(right)])


def hierarchical_question(record: Record, taxonomy: Taxonomy, seed: int = 0) -> ProtocolQuestion | None:
    """Evaluation 4: every node of the truth's path, shuffled; right = the label (deepest). An ancestor
    is true but not the answer. None for a depth-1 label (one option is no question)."""
    path = taxonomy.path(record.node_id)
    if len(path) < 2:
        return None
    return _question("hierarchical", record, HIERARCHY_QUESTION, path, record.node_id, taxonomy,
                     _rng(seed, "hierarchical", record.record_id))


def differential_question(record: Record, taxonomy: Taxonomy, kb_differentials: Mapping[str, tuple[str, ...]],
                          seed: int = 0) -> ProtocolQuestion | None:
    """Evaluation 5: the truth and up to 3 DDx neighbours (knowledge base, then taxonomy DDx, then
    siblings: `trajectories.ddx.ddx_neighbours`); right = the truth. None without any neighbour."""
    rng = _rng(seed, "differential", record.record_id)
    neighbours = _distinct(sorted(ddx_neighbours(record.node_id, taxonomy, kb_differentials)[0]), taxonomy,
                           [record.node_id])
    if not neighbours:
        return None
    chosen = rng.sample(neighbours, min(MAX_DDX_OPTIONS, len(neighbours)))
    stem = CHOICE_QUESTIONS[rng.randrange(len(CHOICE_QUESTIONS))]
    return _question("differential", record, stem, [record.node_id, *chosen], record.node_id, taxonomy, rng)


def build_questions(evaluation: str, records: Sequence[Record], taxonomy: Taxonomy,
                    kb_differentials: Mapping[str, tuple[str, ...]], seed: int = 0) -> tuple[list[ProtocolQuestion], int]:
    """(questions, records skipped) of one evaluation over one dataset's labelled records; the label
    pool for distractors is the dataset's own labels, as in the standard choice evaluation."""
    pool = sorted({r.node_id for r in records if r.node_id is not None})
    builders = {
        "omnimedvqa": lambda r: omnimedvqa_question(r, taxonomy, pool, seed),
        "in_domain": lambda r: in_domain_question(r, taxonomy, pool, seed),
        "malignancy": lambda r: malignancy_question(r, taxonomy, seed),
        "hierarchical": lambda r: hierarchical_question(r, taxonomy, seed),
        "differential": lambda r: differential_question(r, taxonomy, kb_differentials, seed),
    }
    if evaluation not in builders:
        raise ValueError(f"unknown evaluation {evaluation!r}; expected one of {', '.join(EVALUATIONS)}")
    asked = [builders[evaluation](r) for r in records if r.node_id is not None]
    questions = [q for q in asked if q is not None]
    return questions, len(records) - len(questions)


# ----------------------------------------------------------------------------- letter parsing
@dataclass(frozen=True)
class LetterParse:
    """Which option a completion chose, read the paper's way."""

    letter: str | None
    """The chosen option letter; None is a parse failure (scored as wrong)."""
    reason: str
    """Where it was found ("answer_block", "completion") or why not ("no_letter", "duplicate_answer")."""


@lru_cache(maxsize=16)
def _letter_pattern(letters: str) -> re.Pattern[str]:
    upper, lower = re.escape(letters.upper()), re.escape(letters.lower())
    return re.compile(
        rf"(?<![A-Za-z0-9])(?P<upper>[{upper}])(?![A-Za-z0-9])"  # "B", "B. melanoma", "Answer: C"
        rf"|[\(\[](?P<bracketed>[{lower}])[\)\]]"  # "(b)", "[c]"
        rf"|^\s*(?P<leading>[{lower}])(?=\s*$|[.):])"  # "b", "b. melanoma", "c) ..." (not the article "a ...")
    )


def find_letter(text: str, letters: str) -> str | None:
    """The first of `letters` standing as an option letter in `text` (capitals anywhere they stand
    alone; lower case only as "(b)" or leading "b."), upper-cased; None when there is none."""
    match = _letter_pattern(letters).search(text or "")
    if match is None:
        return None
    return next(group for group in match.groups() if group is not None).upper()


def parse_letter(completion: str, letters: str, fmt: AnswerFormat = DEFAULT_FORMAT) -> LetterParse:
    """The option a completion chose: the first letter in its answer block, or in the whole
    completion when it has no answer block. Two answer blocks are a failure (no hedging)."""
    parsed = parse_completion(completion, fmt)
    if parsed.answer_text:
        text, where = parsed.answer_text, "answer_block"
    elif parsed.answer_reason == "duplicate_answer":
        return LetterParse(None, "duplicate_answer")
    else:
        text, where = completion if isinstance(completion, str) else "", "completion"
    letter = find_letter(text, letters)
    return LetterParse(letter, where) if letter else LetterParse(None, "no_letter")
