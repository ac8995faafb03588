"""`skinr1 data build`: pool prepared manifests into the split files the pipeline reads, by a recipe.

Read each prepared manifest; drop unusable rows; link copies of one image (record id, ISIC id,
image bytes) and records of one patient/lesion; refuse (or drop) in-domain data linked to an
out-of-domain set; keep one copy per image (finest label, then recipe order); split whole groups,
keeping official splits (train-only -> 75/25 train/valid, none -> 60/20/20, label-stratified);
write dense/sparse/valid/test/test_sparse (+ test_ood_<name>) after proving that no key crosses
splits. Every input row ends up in one file or in removed.jsonl with its reason and related id.
The recipe (`Recipe`, `DatasetSpec`) is YAML, loaded in `recipe.py`; the report is written by
`build_report.py`; the pure rules live in `splits.py`; docs/datasets.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from skinr1.data import splits as rules
from skinr1.data.build_report import make_report, render_text
from skinr1.data.recipe import NAME, BuildError, DatasetSpec, Recipe
from skinr1.data.records import Record, read_jsonl, write_jsonl, write_lines_atomic, write_text_atomic
from skinr1.taxonomy import LabelResolver, Taxonomy

__all__ = [  # the recipe and report names stay importable from here (skinr1.cli.data_cmd, tests)
    "NAME",
    "BuildError",
    "DatasetSpec",
    "Item",
    "Recipe",
    "build",
    "is_fine",
    "make_report",
    "official_split",
    "render_text",
]

ISIC_ID = re.compile(r"ISIC_\d{7}")
# Sources whose patient/lesion ids are ISIC-archive ids (IL_/IP_/HAM_/BCN_...): one namespace, so a
# lesion seen in two of them is one lesion.
ISIC_ARCHIVE_SOURCES = frozenset({"ham10000", "isic2018", "isic2019", "isic2020", "bcn20000", "isbi2016", "derm12345"})
SPLIT_ALIASES = {"all": None, "": None, "train": "train", "training": "train", "val": "valid", "valid": "valid",
                 "validation": "valid", "dev": "valid", "test": "test", "testing": "test"}
# The pipeline's files and the split each belongs to (dense and sparse are both training data).
PARTITION = {"dense.jsonl": "train", "sparse.jsonl": "train", "valid.jsonl": "valid", "test.jsonl": "test",
             "test_sparse.jsonl": "test"}
HASH_THREADS = 8  # reading files is I/O-bound; threads overlap the waits


@dataclass
class Item:
    """One input row on its way through the build."""

    record: Record
    """The row as prepared."""
    spec: DatasetSpec
    """The recipe entry it came from."""
    priority: int
    """Position of its dataset in the recipe (duplicate tie-break)."""
    ood: bool
    """Whether its dataset is held out as an out-of-domain test set."""
    dup_keys: set[str] = field(default_factory=set)
    """Image identities: 'id:<record id>', 'isic:<ISIC id>', 'sha:<hash>' (plus those of removed copies)."""
    group_keys: set[str] = field(default_factory=set)
    """Patient/lesion keys '<field>:<namespace>:<value>' (plus those of removed copies)."""
    removed: tuple[str, str, str] | None = None
    """(reason, related record id, detail) once removed; None while kept."""
    duplicates: list[str] = field(default_factory=list)
    """Record ids of the copies removed in favour of this one."""
    split: str | None = None
    """train / valid / test once assigned."""
    group: str = ""
    """Smallest record id of its group: names the group in the output."""

    def remove(self, reason: str, related: str = "", detail: str = "") -> None:
        self.removed = (reason, related, detail)


def build(recipe: Recipe, out_dir: str | Path, resolver: LabelResolver | None = None) -> dict[str, Any]:
    """Build OUT/{dense,sparse,valid,test,test_sparse}.jsonl, test_ood_<name>.jsonl and the report.

    Raises `BuildError` - before writing anything - when an input is unusable or the recipe would leak.
    """
    started = time.perf_counter()
    if resolver is None:
        from skinr1.taxonomy import default_resolver

        resolver = default_resolver()
    taxonomy = resolver.taxonomy
    items = _read(recipe)
    _screen(items, taxonomy, recipe)
    overlaps = _resolve_ood_overlap(items, recipe)
    conflicts = _deduplicate(items, taxonomy)
    _split(items, recipe)
    files = _files(items, recipe, taxonomy)
    checks = _verify(files)
    report = make_report(recipe, items, files, taxonomy, overlaps, conflicts, checks)
    out = Path(out_dir)
    for name, members in files.items():
        write_jsonl(out / name, (_output_record(item, taxonomy) for item in members))
    removed = (json.dumps({"record_id": i.record.record_id, "dataset": i.spec.name, "reason": i.removed[0],
                           "related": i.removed[1], "detail": i.removed[2]}, ensure_ascii=False)
               for i in items if i.removed)
    write_lines_atomic(out / "removed.jsonl", removed)
    report["elapsed_s"] = round(time.perf_counter() - started, 3)
    write_text_atomic(out / "report.json", json.dumps(report, indent=2, ensure_ascii=False))
    write_text_atomic(out / "report.txt", render_text(report))
    return report


# ----------------------------------------------------------------------------------- reading
def _read(recipe: Recipe) -> list[Item]:
    items: list[Item] = []
    for priority, (spec, ood) in enumerate(recipe.all_datasets()):
        path = recipe.manifest_path(spec)
        if not path.is_file():
            raise BuildError(f"dataset {spec.name!r}: manifest not found: {path} (run `skinr1 data prepare` first)")
        try:
            records = read_jsonl(path)
        except (OSError, ValueError) as error:
            raise BuildError(f"dataset {spec.name!r}: {error}") from None
        items.extend(Item(record, spec, priority, ood) for record in records)
    return items


def official_split(record: Record, spec: DatasetSpec) -> str | None:
    """The record's official split as train/valid/test, or None; BuildError for unknown names."""
    if not spec.official_split:
        return None
    raw = (record.split or "").strip().lower()
    aliases = {**SPLIT_ALIASES, **{k.lower(): v for k, v in spec.split_aliases.items()}}
    if raw not in aliases:
        raise BuildError(f"dataset {spec.name!r}: record {record.record_id} has split {record.split!r}; known: "
                         f"{sorted(k for k in aliases if k)} - map it with split_aliases or set official_split: false")
    return aliases[raw]


def _screen(items: list[Item], taxonomy: Taxonomy, recipe: Recipe) -> None:
    """Drop unusable rows, check split names, and compute every item's identity and group keys."""
    for item in items:
        record = item.record
        official_split(record, item.spec)  # unknown split names fail the build before anything is written
        if record.node_id is None:
            item.remove("unmapped_label", "", record.original_label)
        elif record.node_id not in taxonomy:
            item.remove("unknown_node", "", record.node_id)
        elif not os.path.isfile(record.image):
            item.remove("missing_image", "", record.image)
    alive = [i for i in items if not i.removed]
    hashes: list[str | None] = [None] * len(alive)
    if recipe.hash_images:
        with ThreadPoolExecutor(max_workers=HASH_THREADS) as pool:
            hashes = list(pool.map(_hash_file, [i.record.image for i in alive], chunksize=64))
    for item, digest in zip(alive, hashes):
        record = item.record
        item.dup_keys = {f"id:{record.record_id}"}
        item.dup_keys.update(f"isic:{m}" for m in ISIC_ID.findall(record.record_id + " " + os.path.basename(record.image)))
        if digest:
            item.dup_keys.add(f"sha:{digest}")
        namespace = item.spec.group_namespace or ("isic" if record.source in ISIC_ARCHIVE_SOURCES else record.source)
        for name in item.spec.group_keys if item.spec.group_keys is not None else recipe.group_keys:
            value = record.extra.get(name)
            if value not in (None, ""):
                item.group_keys.add(f"{name}:{namespace}:{value}")


def _hash_file(path: str) -> str | None:
    digest = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


# ------------------------------------------------------------------------- linking and dedup
def _resolve_ood_overlap(items: list[Item], recipe: Recipe) -> dict[str, Any]:
    """Find in-domain records linked (image, ISIC id, patient, lesion) to an OOD dataset; refuse or drop."""
    alive = [i for i in items if not i.removed]
    components = rules.connected_components([i.dup_keys | i.group_keys for i in alive])
    ood_member: dict[int, Item] = {}
    for item, component in zip(alive, components):
        if item.ood:
            ood_member.setdefault(component, item)
    linked = [(i, ood_member[c]) for i, c in zip(alive, components) if not i.ood and c in ood_member]
    summary = {"policy": recipe.ood_overlap, "in_domain_records": len(linked),
               "by_dataset": dict(Counter(f"{i.spec.name} ~ {o.spec.name}" for i, o in linked))}
    if linked and recipe.ood_overlap == "refuse":
        examples = "; ".join(f"{i.record.record_id} ~ {o.record.record_id}" for i, o in linked[:5])
        raise BuildError(
            f"recipe would leak: {len(linked)} in-domain record(s) share an image, ISIC id, patient or lesion with "
            f"out-of-domain data ({', '.join(f'{k}: {n}' for k, n in summary['by_dataset'].items())}; e.g. {examples}). "
            "Remove the overlap from the inputs or set `ood_overlap: drop_in_domain` to drop the in-domain copies."
        )
    for item, ood in linked:
        item.remove("overlaps_ood", ood.record.record_id, ood.spec.name)
    return summary


def _deduplicate(items: list[Item], taxonomy: Taxonomy) -> dict[str, Any]:
    """Keep one copy per duplicated image (in-domain pooled; each OOD set on its own)."""
    alive = [i for i in items if not i.removed]
    side = [f"ood:{i.spec.name}:" if i.ood else "" for i in alive]
    key_count = Counter(s + k for s, i in zip(side, alive) for k in i.dup_keys)
    members: dict[int, list[Item]] = defaultdict(list)
    for item, component in zip(alive, rules.connected_components([{s + k for k in i.dup_keys} for s, i in zip(side, alive)])):
        members[component].append(item)
    conflicts: list[dict[str, str]] = []
    conflict_count = 0
    for group in members.values():
        if len(group) == 1:
            continue
        copies = [rules.Copy(taxonomy.depth(i.record.node_id), i.priority, i.record.record_id) for i in group]
        kept = group[rules.choose_kept(copies)]
        for item in group:
            if item is kept:
                continue
            prefix = f"ood:{item.spec.name}:" if item.ood else ""
            by = sorted({k.split(":", 1)[0] for k in item.dup_keys if key_count[prefix + k] > 1})
            item.remove("duplicate", kept.record.record_id, "+".join(by))
            kept.duplicates.append(item.record.record_id)
            kept.dup_keys |= item.dup_keys
            kept.group_keys |= item.group_keys
            a, b = kept.record.node_id, item.record.node_id
            if not (taxonomy.is_ancestor(a, b) or taxonomy.is_ancestor(b, a)):
                conflict_count += 1
                if len(conflicts) < 10:
                    conflicts.append({"kept": kept.record.record_id, "kept_node": a,
                                      "removed": item.record.record_id, "removed_node": b})
    return {"count": conflict_count, "examples": conflicts}


# ---------------------------------------------------------------------------------- splitting
def _split(items: list[Item], recipe: Recipe) -> None:
    """Assign every kept in-domain item a split: official where given, stratified groups otherwise."""
    kept = [i for i in items if not i.removed and not i.ood]
    has_valid = {i.spec.name for i in kept if official_split(i.record, i.spec) == "valid"}
    allowed = [rules.allowed_splits(official_split(i.record, i.spec), carve_valid=i.spec.name not in has_valid)
               for i in kept]
    groups: dict[int, list[int]] = defaultdict(list)
    for index, component in enumerate(rules.connected_components([i.dup_keys | i.group_keys for i in kept])):
        groups[component].append(index)
    pools: dict[tuple[str, frozenset[str]], list[tuple[rules.Group, list[Item]]]] = defaultdict(list)
    for indexes in groups.values():
        group_items = [kept[i] for i in indexes]
        choice, dropped = rules.settle_group([allowed[i] for i in indexes])
        keeper = next(item for k, item in enumerate(group_items) if k not in dropped)
        for k in dropped:
            group_items[k].remove("group_split_conflict", keeper.record.record_id, f"its group is in {min(choice)}")
        group_items = [item for k, item in enumerate(group_items) if k not in dropped]
        key = min(item.record.record_id for item in group_items)
        for item in group_items:
            item.group = key
        if len(choice) == 1:
            for item in group_items:
                item.split = min(choice)
        else:
            labels = tuple(item.record.node_id for item in group_items)
            pools[(group_items[0].spec.name, choice)].append((rules.Group(key, labels), group_items))
    for (_, choice), entries in sorted(pools.items(), key=lambda kv: (kv[0][0], sorted(kv[0][1]))):
        if choice == frozenset(rules.SPLITS):
            fractions = dict(recipe.fractions)
        else:
            fractions = {"train": 1.0 - recipe.valid_from_train, "valid": recipe.valid_from_train}
        assigned = rules.stratified_group_split([g for g, _ in entries], fractions, recipe.seed)
        for split, (_, group_items) in zip(assigned, entries):
            for item in group_items:
                item.split = split


def is_fine(node_id: str, taxonomy: Taxonomy, recipe: Recipe) -> bool:
    """A disease-level ('fine') label: deep enough, and a leaf when the recipe asks for leaves."""
    return taxonomy.depth(node_id) >= recipe.fine_min_depth and (not recipe.fine_leaf_only or taxonomy.is_leaf(node_id))


def _files(items: list[Item], recipe: Recipe, taxonomy: Taxonomy) -> dict[str, list[Item]]:
    files: dict[str, list[Item]] = {name: [] for name in PARTITION}
    for spec in recipe.out_of_domain:
        files[f"test_ood_{spec.name}.jsonl"] = []
    for item in items:
        if item.removed:
            continue
        if item.ood:
            item.split = "test"
            files[f"test_ood_{item.spec.name}.jsonl"].append(item)
            continue
        fine = is_fine(item.record.node_id, taxonomy, recipe)
        if item.split == "train":
            files["dense.jsonl" if fine and item.spec.train_set == "dense" else "sparse.jsonl"].append(item)
        elif item.split == "valid":
            files["valid.jsonl"].append(item)
        else:
            files["test.jsonl" if fine else "test_sparse.jsonl"].append(item)
    return files


def _verify(files: dict[str, list[Item]]) -> dict[str, Any]:
    """Prove that no identity or group key crosses splits (OOD sets may share with each other)."""
    pairs = ((PARTITION.get(name, f"ood:{name}"), item.dup_keys | item.group_keys)
             for name, members in files.items() for item in members)
    shared = rules.shared_keys(pairs)
    leaks = {key: sorted(parts) for key, parts in shared.items() if any(not p.startswith("ood:") for p in parts)}
    checked = Counter(k.split(":", 1)[0] for members in files.values() for i in members for k in i.dup_keys | i.group_keys)
    result = {kind: {"keys_checked": n, "crossing_splits": sum(1 for k in leaks if k.split(":", 1)[0] == kind)}
              for kind, n in sorted(checked.items())}
    if leaks:
        example = next(iter(leaks.items()))
        raise BuildError(f"leak check failed: {len(leaks)} key(s) occur in two splits, e.g. {example}; nothing was written")
    return {"passed": True, "by_key": result}


# ------------------------------------------------------------------------------------ output
def _output_record(item: Item, taxonomy: Taxonomy) -> Record:
    extra = dict(item.record.extra)
    extra["build"] = {"dataset": item.spec.name, "group": item.group or item.record.record_id,
                      "source_split": item.record.split}
    if item.duplicates:
        extra["build"]["duplicates"] = sorted(item.duplicates)
    return replace(item.record, split=item.split or "test", label_depth=taxonomy.depth(item.record.node_id), extra=extra)
