"""Reward throughput: completions scored per second by the pure scorer and by one Ray reward actor.

    python benchmarks/bench_reward.py [--n 20000] [--rounds 5] [--batch-size 1024] [--no-actor]

Completions are realistic: ~300 words of reasoning that mention several disease names, then an
answer that is correct, coarser, a sibling, in the wrong category, a synonym, unresolvable or
malformed (missing/duplicate/unclosed tags, text outside), in open and multiple-choice mode.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rewards import RewardConfig, RewardSample, RewardScorer  # noqa: E402
from skinr1.prompts import DEFAULT_FORMAT, make_choice_options  # noqa: E402
from skinr1.taxonomy import DEFAULT_TAXONOMY_PATH, LabelResolver, Taxonomy, default_resolver  # noqa: E402

SENTENCES = [
    "The image shows a {size} {colour} {shape} lesion on the {site} with {border} borders.",
    "Dermoscopic features include {feature} and {feature}, which point towards a {category} process.",
    "At the category level this is most consistent with a {category} lesion; within it, the {group} group fits best.",
    "The main differential is {other}, but the {feature} argues against it.",
    "{other} was considered, although it usually presents with {feature} rather than {feature}.",
    "Given the patient's age and the distribution, {name} is the leading diagnosis.",
]
WORDS = {
    "size": ["small", "large", "8 mm", "well-circumscribed", "irregular"],
    "colour": ["brown", "pink", "black", "erythematous", "pearly", "variegated"],
    "shape": ["papular", "nodular", "plaque-like", "macular", "ulcerated"],
    "site": ["back", "cheek", "forearm", "scalp", "shin"],
    "border": ["irregular", "sharp", "rolled", "ill-defined"],
    "feature": ["arborising vessels", "a blue-white veil", "an atypical pigment network", "silvery scale",
                "comedo-like openings", "a central white patch", "regression structures"],
}


def load_resolver() -> LabelResolver:
    try:
        return default_resolver()
    except FileNotFoundError:  # label maps not shipped yet: free-text names need only the tree
        return LabelResolver(Taxonomy.from_yaml(DEFAULT_TAXONOMY_PATH), {})


def reasoning_text(rng: random.Random, tax: Taxonomy, gt: str, words: int = 300) -> str:
    path = tax.path(gt)
    fill = {"name": tax.node(gt).name, "category": tax.node(path[0]).name, "group": tax.node(path[min(1, len(path) - 1)]).name}
    out: list[str] = []
    while sum(len(s.split()) for s in out) < words:
        values = {k: rng.choice(v) for k, v in WORDS.items()}
        values["other"] = tax.node(rng.choice(tax.ddx(gt) or list(tax.nodes))).name
        out.append(rng.choice(SENTENCES).format(**values, **fill))
    return " ".join(out)


def answer_for(rng: random.Random, tax: Taxonomy, gt: str, kind: str) -> str:
    node = tax.node(gt)
    if kind == "correct":
        name = node.name
    elif kind == "synonym":
        name = rng.choice(node.synonyms) if node.synonyms else node.name.upper()
    elif kind == "coarser":
        name = tax.node(tax.path(gt)[max(0, tax.depth(gt) - 2)]).name
    elif kind == "sibling":
        name = tax.node(rng.choice(tax.siblings(gt) or [gt])).name
    elif kind == "wrong_category":
        name = tax.node(rng.choice([n for n in tax.nodes if tax.path(n)[0] != tax.path(gt)[0]])).name
    else:
        name = "an unusual rash of uncertain origin"
    malignancy = rng.choice([tax.malignancy(gt), "benign", None])
    return f"{name} ({malignancy})" if malignancy else name


def malformed(rng: random.Random, reasoning: str, answer: str) -> str:
    f = DEFAULT_FORMAT
    return rng.choice([
        f"{reasoning}\n{f.answer_open}{answer}{f.answer_close}",  # no reasoning tags
        f"{f.reasoning_open}{reasoning}{f.reasoning_close}\nThe answer is {answer}.",  # no answer tag
        f"{f.reasoning_open}{reasoning}\n{f.answer_open}{answer}{f.answer_close}",  # unclosed reasoning
        f"Sure! {f.reasoning_open}{reasoning}{f.reasoning_close}{f.answer_open}{answer}{f.answer_close}",
        f"{f.reasoning_open}{reasoning}{f.reasoning_close}{f.answer_open}{answer}{f.answer_close}" * 2,
    ])


def make_workload(tax: Taxonomy, mode: str, n: int, seed: int = 0, group: int = 4) -> tuple[list[str], list[RewardSample]]:
    """`n` completions, `group` per prompt (GRPO's group size; the paper's is 4)."""
    rng = random.Random(seed)
    leaves = sorted(node.id for node in tax.leaves())
    kinds = ["correct"] * 4 + ["synonym", "coarser", "coarser", "sibling", "wrong_category", "unresolvable"]
    completions, samples = [], []
    for i in range(n):
        if i % group == 0:
            gt = rng.choice(leaves)
            options = make_choice_options(tax, gt, rng.sample(leaves, 12), rng) if mode == "choice" else []
            sample = RewardSample(gt, mode, tuple(options))
        reasoning = reasoning_text(rng, tax, gt)
        if mode == "choice":
            pick = rng.choice(options)
            answer = f"{pick.letter}. {pick.name} ({tax.malignancy(pick.node_id)})"
        else:
            answer = answer_for(rng, tax, gt, rng.choice(kinds))
        if rng.random() < 0.2:
            completions.append(malformed(rng, reasoning, answer))
        else:
            completions.append(DEFAULT_FORMAT.render(reasoning, answer))
        samples.append(sample)
    return completions, samples


def bench_pure(scorer: RewardScorer, completions: list[str], samples: list[RewardSample], rounds: int) -> tuple[float, float]:
    """(cold first pass, best warm pass) completions per second."""
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        for completion, sample in zip(completions, samples):
            scorer.score(completion, sample)
        rates.append(len(completions) / (time.perf_counter() - start))
    return rates[0], max(rates[1:] or rates)


def bench_actor(config: RewardConfig, resolver: LabelResolver, records: list[dict], batch_size: int, rounds: int) -> float:
    import ray

    from rewards.actor import RewardActor
    from skinr1.cluster import init_ray, shutdown_ray

    init_ray(num_cpus=2, log_to_driver=False)
    try:
        actor = RewardActor.remote(config, resolver)
        batches = [records[i : i + batch_size] for i in range(0, len(records), batch_size)]
        ray.get(actor.score.remote(batches[0]))  # start-up and cache warm-up
        best = 0.0
        for _ in range(rounds):
            start = time.perf_counter()
            ray.get([actor.score.remote(b) for b in batches])
            best = max(best, len(records) / (time.perf_counter() - start))
        return best
    finally:
        shutdown_ray()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="completions per mode")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=1024, help="records per actor call")
    parser.add_argument("--no-actor", action="store_true", help="skip the Ray actor benchmark")
    args = parser.parse_args(argv)

    resolver = load_resolver()
    tax = resolver.taxonomy
    print(f"taxonomy: {len(tax)} nodes; {args.n} completions per mode, "
          f"~{sum(len(c.split()) for c in make_workload(tax, 'open', 50)[0]) // 50} words each")
    workloads = {}
    for preset in ("open", "paper"):
        config = RewardConfig.preset(preset)
        completions, samples = make_workload(tax, config.mode, args.n)
        workloads[preset] = (config, completions, samples)
        cold, warm = bench_pure(RewardScorer(config, resolver), completions, samples, args.rounds)
        print(f"pure  {preset:5s}: {warm:>10,.0f} completions/s warm ({cold:,.0f}/s first pass, cold caches)")
    if not args.no_actor:
        config, completions, samples = workloads["open"]
        records = [s.to_record(c) for c, s in zip(completions, samples)]
        rate = bench_actor(config, resolver, records, args.batch_size, max(2, args.rounds // 2))
        print(f"actor open : {rate:>10,.0f} completions/s (one RewardActor, batches of {args.batch_size}, incl. transfer)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
