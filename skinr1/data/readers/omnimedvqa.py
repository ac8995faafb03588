"""OmniMedVQA's skin subsets: multiple-choice QA JSON files whose diagnosis answers label images.

Format (as downloaded): QA_information/Open-access/<subset>.json, each a JSON array of entries
{question_id, question, gt_answer, option_A, option_B[, option_C, option_D], image_path, dataset,
modality_type, question_type}; image_path is relative to the OmniMedVQA folder (pass that folder
as --images). `--manifest` is one such file or a folder of them (all *.json below it, sorted).

Only "Disease Diagnosis" questions on skin images (dermoscopy / dermatology / clinical skin
photos) carry a label; every other entry is reported as a bad row of kind
`not_a_diagnosis_question` or `not_skin`, never dropped silently. `gt_answer` is resolved in the
vocabulary of the subset's dataset when it is a known source (ISIC2018, HAM10000, ...: there
"Actinic keratoses" is HAM10000's AKIEC class), else in the omnimedvqa vocabulary, then as free
text. Options are kept in `extra.options` for multiple-choice evaluation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from skinr1.data.readers.base import RowContext, RowError, RowFields, RowIterator, SourceFormat, required_text, text
from skinr1.data.readers.tables import ERROR_KEY, ManifestError
from skinr1.taxonomy import canonical_source

SOURCE = "omnimedvqa"
SKIN_MODALITY_WORDS = ("dermoscopy", "dermatology", "dermatoscopy", "skin")
OPTION_KEYS = ("option_A", "option_B", "option_C", "option_D")


def qa_json_rows(path: Path, options: Mapping[str, Any]) -> RowIterator:
    """Entries of one QA JSON array (or of every *.json below a folder); position = 1-based entry number."""
    files = sorted(path.rglob("*.json")) if path.is_dir() else [path]
    if not files:
        raise ManifestError(f"{path}: no *.json QA files below this folder")
    documents: list[tuple[Path, list[Any]]] = []
    for file in files:
        try:
            document = json.loads(file.read_text(encoding="utf-8-sig"))
        except (OSError, json.JSONDecodeError) as error:
            raise ManifestError(f"{file}: not a readable OmniMedVQA QA file: {error}") from None
        if not isinstance(document, list):
            raise ManifestError(f"{file}: expected a JSON array of QA entries, got {type(document).__name__}")
        documents.append((file, document))

    def generate() -> RowIterator:
        for file, entries in documents:
            for number, entry in enumerate(entries, start=1):
                if not isinstance(entry, dict):
                    yield number, {ERROR_KEY: f"{file.name} entry {number}: expected an object, got {type(entry).__name__}"}
                    continue
                yield number, entry

    return generate()


def _vocabulary(subset: str) -> str:
    try:
        return canonical_source(subset)
    except ValueError:
        return SOURCE


def qa_row(row: dict[str, Any], ctx: RowContext) -> RowFields:
    question_id = required_text(row, "question_id")
    question_type = text(row, "question_type")
    if "diagnosis" not in question_type.lower():
        raise RowError(f"question {question_id} is a {question_type or 'untyped'!r} question, not a diagnosis",
                       "not_a_diagnosis_question")
    modality = text(row, "modality_type")
    if not any(word in modality.lower() for word in SKIN_MODALITY_WORDS):
        raise RowError(f"question {question_id}: modality {modality!r} is not a skin image", "not_skin")
    subset = text(row, "dataset")
    return RowFields(
        row_id=question_id,
        image=required_text(row, "image_path"),
        label=text(row, "gt_answer"),
        source=SOURCE,
        resolve_source=_vocabulary(subset),
        extra={
            "subset": subset,
            "question": text(row, "question"),
            "options": {key[-1]: text(row, key) for key in OPTION_KEYS if text(row, key)},
            "modality_type": modality,
        },
    )


OMNIMEDVQA = SourceFormat(
    name=SOURCE,
    description="OmniMedVQA QA JSON (question_id, gt_answer, option_A..D, image_path, dataset, ...), a file or a folder of them",
    required=(),
    row_fields=qa_row,
    rows=qa_json_rows,
)
