"""Label-string normalisation shared by the taxonomy, the answer parser and the dataset readers.

Dataset vocabularies and model answers spell the same disease many ways ("Basal-cell carcinoma",
"basal_cell_carcinoma", "the basal cell carcinomas"). Every lookup goes through `normalize_label`
so that these differences never decide whether a label resolves.
"""

from __future__ import annotations

import re
import unicodedata

_ARTICLES = ("the ", "a ", "an ")
_NON_WORD = re.compile(r"[^a-z0-9]+")


def normalize_label(text: str) -> str:
    """Lower-case, strip accents and punctuation, collapse spaces, drop a leading article.

    >>> normalize_label("  The Basal-Cell_Carcinoma. ")
    'basal cell carcinoma'
    """
    folded = unicodedata.normalize("NFKD", text)
    folded = "".join(ch for ch in folded if not unicodedata.combining(ch)).lower()
    # Apostrophes join words ("Darier's" -> "dariers") rather than split them.
    folded = folded.replace("'", "").replace("\u2019", "")
    words = _NON_WORD.sub(" ", folded).strip()
    for article in _ARTICLES:
        if words.startswith(article):
            words = words[len(article):]
            break
    return words


def singular_variants(normalized: str) -> list[str]:
    """Candidate singular forms of the last word of an already-normalised label.

    Tried only after an exact match fails, so "nevi" -> "nevus" and "keratoses" -> "keratosis"
    resolve without ever turning a real name into a different one.
    """
    if not normalized:
        return []
    head, _, last = normalized.rpartition(" ")
    prefix = f"{head} " if head else ""
    candidates: list[str] = []
    if last.endswith("oses"):
        candidates.append(last[:-2] + "is")  # keratoses -> keratosis
    if last.endswith("ies"):
        candidates.append(last[:-3] + "y")
    if last.endswith("i") and len(last) > 3:
        candidates.append(last[:-1] + "us")  # nevi -> nevus
    if last.endswith("ata"):
        candidates.append(last[:-1])  # condylomata -> condyloma
    if last.endswith("es"):
        candidates.append(last[:-2])
    if last.endswith("s") and not last.endswith("ss") and not last.endswith("us") and not last.endswith("is"):
        candidates.append(last[:-1])
    return [prefix + c for c in candidates if c]
