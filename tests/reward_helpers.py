"""Test helpers shared by the prompt and reward tests: a small hand-made taxonomy and completions.

Node ids match the shipped taxonomy's fixed ids, so cases read the same against both.
"""

from __future__ import annotations

from skinr1.prompts import DEFAULT_FORMAT, AnswerFormat, ChoiceOption
from skinr1.taxonomy import LabelResolver, Node, Taxonomy
from skinr1.taxonomy.label_maps import SourceVocabulary

# (id, name, malignancy, synonyms, ddx, children)
TINY_TREE = [
    ("malignant", "malignant", "malignant", (), (), [
        ("malignant_melanoma", "malignant melanoma", None, (), (), [
            ("melanoma", "melanoma", None, ("cutaneous melanoma",), ("melanocytic_nevus", "seborrheic_keratosis"), [
                ("superficial_spreading_melanoma", "superficial spreading melanoma", None, ("SSM",), (), []),
                ("nodular_melanoma", "nodular melanoma", None, (), (), []),
            ]),
        ]),
        ("malignant_epidermal", "malignant epidermal tumour", None, (), (), [
            ("basal_cell_carcinoma", "basal cell carcinoma", None, ("BCC", "basalioma"),
             ("seborrheic_keratosis", "squamous_cell_carcinoma"), []),
            ("squamous_cell_carcinoma", "squamous cell carcinoma", None, ("SCC",), ("actinic_keratosis",), []),
            ("actinic_keratosis", "actinic keratosis", "precancerous", ("solar keratosis",), (), []),
        ]),
    ]),
    ("benign", "benign", "benign", (), (), [
        ("benign_melanocyte", "benign melanocytic lesion", None, (), (), [
            ("melanocytic_nevus", "melanocytic nevus", None, ("nevus", "mole"), ("melanoma",), []),
        ]),
        ("benign_epidermal", "benign epidermal tumour", None, (), (), [
            ("seborrheic_keratosis", "seborrheic keratosis", None, ("SK",), ("melanoma",), []),
        ]),
        ("benign_dermal", "benign dermal tumour", None, (), (), [
            ("dermatofibroma", "dermatofibroma", None, (), (), []),
        ]),
    ]),
    ("non_neoplastic", "non-neoplastic", "non-neoplastic", (), (), [
        ("inflammatory", "inflammatory disease", None, (), (), [
            ("psoriasis", "psoriasis", None, (), ("eczema",), []),
            ("eczema", "eczema", None, ("atopic dermatitis",), ("psoriasis",), []),
        ]),
        ("pigmentary", "pigmentary disorder", None, (), (), [
            ("vitiligo", "vitiligo", None, (), (), []),
        ]),
    ]),
]

HAM = SourceVocabulary(
    name="ham10000",
    description="tiny test vocabulary",
    labels={"mel": "melanoma", "nv": "melanocytic_nevus", "bcc": "basal_cell_carcinoma", "akiec": "actinic_keratosis",
            "bkl": "seborrheic_keratosis", "df": "dermatofibroma"},
    unmapped={"unk": "unknown lesion type"},
)


def _nodes(entries, parent=None, inherited=None):
    for node_id, name, malignancy, synonyms, ddx, children in entries:
        malignancy = malignancy or inherited
        yield Node(node_id, name, parent, malignancy, tuple(synonyms), tuple(ddx), tuple(c[0] for c in children))
        yield from _nodes(children, node_id, malignancy)


def tiny_resolver() -> LabelResolver:
    return LabelResolver(Taxonomy.from_nodes(_nodes(TINY_TREE)), {"ham10000": HAM})


def good(answer: str, reasoning: str = "Pearly papule with telangiectasia.", fmt: AnswerFormat = DEFAULT_FORMAT) -> str:
    """A well-formed completion whose answer block holds `answer` verbatim."""
    return fmt.render(reasoning, answer)


def opts(*node_ids: str) -> tuple[ChoiceOption, ...]:
    """Choice options A, B, ... for `node_ids`, named after them."""
    return tuple(ChoiceOption("ABCD"[i], n, n.replace("_", " ")) for i, n in enumerate(node_ids))
