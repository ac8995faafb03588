"""The Fitzpatrick17k hierarchy, embedded for the taxonomy and label-map tests, and where the
shared copy of the dataset lies on this machine (its tests cross-check the two when it exists)."""

from __future__ import annotations

from pathlib import Path

from skinr1.pipeline.harmonization import find_fitzpatrick_csv

SHARED_FITZPATRICK = (find_fitzpatrick_csv() or Path("/nonexistent/fitzpatrick17k.csv")).parent

# Fitzpatrick17k: three_partition_label > nine_partition_label > label (114 labels).
FITZPATRICK_TREE = {
    "benign": {
        "benign dermal": (
            "becker nevus", "dermatofibroma", "fordyce spots", "granuloma pyogenic", "lymphangioma",
            "mucous cyst", "pilar cyst", "pilomatricoma", "port wine stain", "pyogenic granuloma",
            "syringoma", "telangiectases",
        ),
        "benign epidermal": (
            "disseminated actinic porokeratosis", "epidermal nevus", "milia", "naevus comedonicus",
            "nevus sebaceous of jadassohn", "porokeratosis actinic", "porokeratosis of mibelli",
            "prurigo nodularis", "seborrheic keratosis",
        ),
        "benign melanocyte": (
            "congenital nevus", "halo nevus", "nevocytic nevus",
        ),
    },
    "malignant": {
        "malignant cutaneous lymphoma": (
            "mycosis fungoides",
        ),
        "malignant dermal": (
            "kaposi sarcoma",
        ),
        "malignant epidermal": (
            "actinic keratosis", "basal cell carcinoma", "basal cell carcinoma morpheiform",
            "solid cystic basal cell carcinoma", "squamous cell carcinoma",
        ),
        "malignant melanoma": (
            "lentigo maligna", "malignant melanoma", "melanoma", "superficial spreading melanoma ssm",
        ),
    },
    "non-neoplastic": {
        "genodermatoses": (
            "acrodermatitis enteropathica", "dariers disease", "ehlers danlos syndrome",
            "epidermolysis bullosa", "hailey hailey disease", "ichthyosis vulgaris",
            "incontinentia pigmenti", "neurofibromatosis", "tuberous sclerosis",
            "xeroderma pigmentosum",
        ),
        "inflammatory": (
            "acanthosis nigricans", "acne", "acne vulgaris",
            "acquired autoimmune bullous diseaseherpes gestationis", "allergic contact dermatitis",
            "aplasia cutis", "behcets disease", "calcinosis cutis", "cheilitis", "dermatomyositis",
            "drug eruption", "drug induced pigmentary changes", "dyshidrotic eczema", "eczema",
            "erythema annulare centrifigum", "erythema elevatum diutinum", "erythema multiforme",
            "erythema nodosum", "factitial dermatitis", "fixed eruptions", "folliculitis",
            "granuloma annulare", "hidradenitis", "juvenile xanthogranuloma", "keloid",
            "keratosis pilaris", "langerhans cell histiocytosis", "lichen amyloidosis", "lichen planus",
            "lichen simplex", "livedo reticularis", "lupus erythematosus", "lupus subacute",
            "lyme disease", "mucinosis", "myiasis", "necrobiosis lipoidica", "nematode infection",
            "neurodermatitis", "neurotic excoriations", "neutrophilic dermatoses",
            "papilomatosis confluentes and reticulate", "paronychia", "pediculosis lids",
            "perioral dermatitis", "photodermatoses", "pityriasis lichenoides chronica",
            "pityriasis rosea", "pityriasis rubra pilaris", "porphyria", "psoriasis",
            "pustular psoriasis", "rhinophyma", "rosacea", "sarcoidosis", "scabies", "scleroderma",
            "scleromyxedema", "seborrheic dermatitis", "stasis edema", "stevens johnson syndrome",
            "striae", "sun damaged skin", "tick bite", "tungiasis", "urticaria", "urticaria pigmentosa",
            "vitiligo", "xanthomas",
        ),
    },
}


def fitzpatrick_labels():
    for three, groups in FITZPATRICK_TREE.items():
        for nine, labels in groups.items():
            for label in labels:
                yield three, nine, label
