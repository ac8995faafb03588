"""Readers of the paper's remaining datasets, each on a small fixture in the format's real layout.

Derm12345, DermNet (folder per class), ISIC 2018 Task 3 test ground truth (one-hot), ISIC 2020
(train CSV), ISBI 2016 Part 3 (headerless ground truth), the Monkeypox Skin Lesion Dataset
(folder per class) and OmniMedVQA's skin subsets (QA JSON).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from skinr1.data.prepare import prepare
from skinr1.data.readers import BadRow, ManifestError, format_for, read_manifest
from skinr1.data.readers.challenges import split_from_name
from skinr1.data.records import Record


def read(source: str, manifest: Path, images: Path | None = None) -> tuple[dict[str, Record], list[BadRow]]:
    items = list(read_manifest(source, manifest, images))
    records = {i.record_id: i for i in items if isinstance(i, Record)}
    bad = [i for i in items if isinstance(i, BadRow)]
    assert len(records) + len(bad) == len(items)
    return records, bad


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def touch(root: Path, *relative: str) -> Path:
    for name in relative:
        write(root / name, f"pixels {name}")
    return root


# ----------------------------------------------------------------------------- ISIC 2018 / 2020
def test_isic2018_task3_test_ground_truth(tmp_path):
    path = write(tmp_path / "ISIC2018_Task3_Test_GroundTruth.csv",
                 "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\n"
                 "ISIC_0034524,0.0,1.0,0.0,0.0,0.0,0.0,0.0\n"
                 "ISIC_0034525,0.0,0.0,0.0,1.0,0.0,0.0,0.0\n"
                 "ISIC_0034526,0.0,0.0,0.0,0.0,0.0,0.0,1.0\n"
                 "ISIC_0034527,1.0,1.0,0.0,0.0,0.0,0.0,0.0\n")
    records, bad = read("ISIC_2018", path, Path("/img"))
    assert {r: (x.node_id, x.split) for r, x in records.items()} == {
        "isic2018:ISIC_0034524": ("melanocytic_nevus", "test"),
        "isic2018:ISIC_0034525": ("malignant_epidermal", "test"),  # AKIEC: AK and Bowen's, the group
        "isic2018:ISIC_0034526": ("vascular_lesion", "test"),
    }
    assert records["isic2018:ISIC_0034524"].image == "/img/ISIC_0034524.jpg"
    assert [b.kind for b in bad] == ["one_hot_count"]


def test_isic2020_falls_back_to_benign_malignant(tmp_path):
    path = write(tmp_path / "ISIC_2020_Training_GroundTruth_v2.csv",
                 "image_name,patient_id,lesion_id,sex,age_approx,anatom_site_general_challenge,diagnosis,benign_malignant,target\n"
                 "ISIC_2637011,IP_7279968,IL_7972535,male,45.0,head/neck,unknown,benign,0\n"
                 "ISIC_0015719,IP_3075186,IL_4649854,female,45.0,upper extremity,melanoma,malignant,1\n"
                 "ISIC_0052212,IP_2842074,IL_9087444,female,50.0,lower extremity,nevus,benign,0\n"
                 "ISIC_0068279,IP_6890425,IL_1427749,female,45.0,head/neck,atypical melanocyte proliferation,benign,0\n"
                 "ISIC_0074268,IP_8723313,IL_5017777,female,55.0,torso,cafe-au-lait macule,benign,0\n"
                 "ISIC_0074311,IP_2950485,IL_9550015,female,40.0,lower extremity,unknown,,\n")
    records, bad = read("isic2020", path, Path("/img"))
    assert not bad
    nodes = {r.split(":")[1]: x.node_id for r, x in records.items()}
    assert nodes == {"ISIC_2637011": "benign", "ISIC_0015719": "melanoma", "ISIC_0052212": "melanocytic_nevus",
                     "ISIC_0068279": "benign", "ISIC_0074268": "cafe_au_lait_macule", "ISIC_0074311": None}
    unknown = records["isic2020:ISIC_2637011"]
    assert unknown.extra["label_fallback"] == {"from": "unknown", "to": "benign"} and unknown.label_depth == 1
    assert unknown.extra["patient_id"] == "IP_7279968" and unknown.extra["lesion_id"] == "IL_7972535"
    assert records["isic2020:ISIC_0074311"].extra["unmapped_reason"] == "diagnosis unknown"


# ------------------------------------------------------------------------------------ ISBI 2016
def test_isbi2016_headerless_text_and_numeric_labels(tmp_path):
    training = write(tmp_path / "ISBI2016_ISIC_Part3_Training_GroundTruth.csv",
                     "ISIC_0000000,benign\nISIC_0000002,malignant\nISIC_0000004,maybe\nISIC_0000006\n")
    records, bad = read("isbi2016", training)
    assert {r: (x.node_id, x.split, x.original_label) for r, x in records.items()} == {
        "isbi2016:ISIC_0000000": ("benign", "train", "benign"),
        "isbi2016:ISIC_0000002": ("malignant", "train", "malignant"),
        "isbi2016:ISIC_0000004": (None, "train", "maybe"),  # unknown label: unmapped, never guessed
    }
    assert [(b.line, b.kind) for b in bad] == [(4, "malformed_row")]
    test = write(tmp_path / "ISBI2016_ISIC_Part3_Test_GroundTruth.csv", "ISIC_0000003,0.0\nISIC_0000012,1.0\n")
    records, _ = read("isbi2016", test)
    assert {r: (x.node_id, x.split) for r, x in records.items()} == {
        "isbi2016:ISIC_0000003": ("benign", "test"), "isbi2016:ISIC_0000012": ("malignant", "test")}
    assert records["isbi2016:ISIC_0000003"].image == str(tmp_path / "ISIC_0000003.jpg")


@pytest.mark.parametrize("name, split", [
    ("ISIC2018_Task3_Test_GroundTruth.csv", "test"), ("ISIC2018_Task3_Validation_GroundTruth.csv", "valid"),
    ("ISBI2016_ISIC_Part3_Training_GroundTruth.csv", "train"), ("derm12345_metadata_train.csv", "train"),
    ("metadata.csv", None), ("interval_values.csv", None),
])
def test_split_from_file_name(name, split):
    assert split_from_name(Path(name)) == split


# ------------------------------------------------------------------------------------ Derm12345
def test_derm12345_release_table_with_fallbacks(tmp_path):
    path = write(tmp_path / "derm12345_metadata_test.csv",
                 "image_id,patient_id,super_class,main_class_1,sub_class\n"
                 "derm_0001,P1,melanocytic malignant,melanoma,acral nodular melanoma\n"
                 "derm_0002,P1,melanocytic benign,banal compound,acral compound nevus\n"
                 "derm_0003,P2,nonmelanocytic benign,keratinocytic,seborrheic keratosis\n"
                 "derm_0004,P3,melanocytic benign,banal dermal,a brand new nevus subtype\n"
                 "derm_0005,P4,nonmelanocytic indeterminate,x,y\n")
    records, bad = read("derm12345", path, Path("/img"))
    assert not bad
    assert {r: x.node_id for r, x in records.items()} == {
        "derm12345:derm_0001": "nodular_melanoma", "derm12345:derm_0002": "compound_nevus",
        "derm12345:derm_0003": "seborrheic_keratosis", "derm12345:derm_0004": "benign_melanocyte",
        "derm12345:derm_0005": None,
    }
    assert records["derm12345:derm_0004"].extra["label_fallback"]["to"] == "melanocytic benign"
    assert records["derm12345:derm_0001"].split == "test" and records["derm12345:derm_0001"].extra["patient_id"] == "P1"
    assert records["derm12345:derm_0001"].image == "/img/derm_0001.jpg"


def test_derm12345_isic_archive_export(tmp_path):
    path = write(tmp_path / "metadata.csv",
                 "isic_id,attribution,diagnosis_1,diagnosis_2,diagnosis_3,patient_id\n"
                 "ISIC_9990001,Derm12345,Benign,Benign melanocytic proliferations,Nevus,IP_1\n")
    records, _ = read("derm12345", path)
    record = records["derm12345:ISIC_9990001"]
    assert record.node_id == "melanocytic_nevus" and record.extra["patient_id"] == "IP_1" and record.split == "all"


# ------------------------------------------------------------------------------ folder per class
def test_dermnet_class_folders_and_splits(tmp_path):
    root = touch(tmp_path / "dermnet", "train/Acne and Rosacea Photos/acne-1.jpg",
                 "train/Melanoma Skin Cancer Nevi and Moles/mel-1.jpg", "test/Urticaria Hives/hives-1.JPG",
                 "test/Vasculitis Photos/v-1.jpeg", "train/Eczema Photos/notes.txt", "stray.jpg")
    records, bad = read("dermnet", root)
    assert {r: (x.node_id, x.split) for r, x in records.items()} == {
        "dermnet:train/Acne and Rosacea Photos/acne-1": ("inflammatory", "train"),
        "dermnet:train/Melanoma Skin Cancer Nevi and Moles/mel-1": (None, "train"),  # benign + malignant mixed
        "dermnet:test/Urticaria Hives/hives-1": ("urticaria", "test"),
        "dermnet:test/Vasculitis Photos/v-1": ("vasculitis", "test"),
    }
    assert "nevi" in records["dermnet:train/Melanoma Skin Cancer Nevi and Moles/mel-1"].extra["unmapped_reason"]
    assert records["dermnet:test/Urticaria Hives/hives-1"].image == str(root / "test/Urticaria Hives/hives-1.JPG")
    assert [b.reason for b in bad] == ["stray.jpg: image is not inside a class folder"]
    with pytest.raises(ManifestError, match="expected the dataset folder"):
        read_manifest("dermnet", root / "stray.jpg")
    with pytest.raises(ManifestError, match="no image files"):
        read_manifest("dermnet", write(tmp_path / "empty" / "README.txt", "x").parent)


def test_msld_classes_and_augmented_copies(tmp_path):
    root = touch(tmp_path / "msld", "Original Images/Monkeypox/M01_01.jpg", "Original Images/Chickenpox/C01_01.jpg",
                 "Original Images/Measles/ME01_01.jpg", "Original Images/Normal/N01_01.jpg",
                 "Augmented Images/Monkeypox_augmented/M01_01_00.jpg")
    records, bad = read("monkeypox", root)
    assert {r.split("/")[-2]: x.node_id for r, x in records.items()} == {
        "Monkeypox": "mpox", "Chickenpox": "chickenpox", "Measles": "measles", "Normal": None}
    assert "no node" in records["msld:Original Images/Normal/N01_01"].extra["unmapped_reason"]
    assert [b.kind for b in bad] == ["augmented_image"]
    assert format_for("Monkeypox Skin Lesion Dataset").name == "msld"


def test_prepare_reads_a_class_folder_with_its_images(tmp_path):
    root = touch(tmp_path / "msld", "Monkeypox/M01_01.jpg", "Measles/ME01_01.jpg")
    report = prepare("msld", root, root, tmp_path / "out", check_images=False, progress=False)
    assert report["usable"] == 2 and report["images"]["missing"] == 0


# ------------------------------------------------------------------------------------ OmniMedVQA
def qa(question_id, answer, question_type="Disease Diagnosis", modality="Dermoscopy", dataset="ISIC2018", image=None):
    return {"question_id": question_id, "question": "What is the diagnosis?", "gt_answer": answer,
            "option_A": answer, "option_B": "Dermatofibroma", "image_path": image or f"Images/{dataset}/{question_id}.jpg",
            "dataset": dataset, "modality_type": modality, "question_type": question_type}


def test_omnimedvqa_skin_diagnosis_questions(tmp_path):
    entries = [qa("ISIC_0024306", "Melanocytic nevi"), qa("q2", "Actinic keratoses", dataset="HAM10000"),
               qa("q3", "Monkeypox", dataset="MSLD-like", modality="Dermatology"), qa("q4", "Normal", dataset="Skin X"),
               qa("q5", "Dermoscopy", question_type="Modality Recognition"), qa("q6", "Pneumonia", modality="X-Ray"), 7]
    path = write(tmp_path / "QA_information" / "Open-access" / "ISIC2018.json", json.dumps(entries))
    records, bad = read("omnimedvqa", path, tmp_path)
    assert {r: x.node_id for r, x in records.items()} == {
        "omnimedvqa:ISIC_0024306": "melanocytic_nevus", "omnimedvqa:q2": "malignant_epidermal",  # HAM10000's AKIEC
        "omnimedvqa:q3": "mpox", "omnimedvqa:q4": None}
    first = records["omnimedvqa:ISIC_0024306"]
    assert first.image == str(tmp_path / "Images/ISIC2018/ISIC_0024306.jpg")
    assert first.extra["options"] == {"A": "Melanocytic nevi", "B": "Dermatofibroma"} and first.extra["subset"] == "ISIC2018"
    assert [b.kind for b in bad] == ["not_a_diagnosis_question", "not_skin", "malformed_row"]
    folder_records, _ = read("omnimedvqa", tmp_path / "QA_information", tmp_path)
    assert folder_records.keys() == records.keys()
    with pytest.raises(ManifestError, match="JSON array"):
        read_manifest("omnimedvqa", write(tmp_path / "x.json", "{}"))
