"""The template writer: short, deterministic, offline trajectories (demo, tests, smoke training).

Each trajectory walks the hierarchy (category -> group(s) -> disease) with the visible features the
knowledge base lists for each level, and for the DDx types (random-DDx too: same wording, only the
differential is drawn differently) compares with the planned differential.
Every step has several phrasings chosen by an RNG seeded with the record id, so the SFT model does
not learn one sentence, while a re-run writes byte-identical text. Completions stay around 40-80
words: the demo's policy has ~1M parameters and trains on a CPU.
"""

from __future__ import annotations

import random
from typing import Sequence

from skinr1.trajectories.context import Context, Generation, Job
from skinr1.trajectories.kinds import KEEP_TYPES, SWITCH_TYPES
from skinr1.trajectories.plan import seeded_rng

OBSERVE_TWO = (
    "The image shows {a} and {b}.",
    "I see {a} with {b}.",
    "On inspection: {a}, plus {b}.",
    "Visible here are {a} and {b}.",
)
OBSERVE_ONE = ("The image shows {a}.", "I see {a}.", "Visible here: {a}.")
OBSERVE_NONE = ("I look at the overall morphology.", "I start from the overall appearance.")
CATEGORY = (
    "This places it in the {name} category{why}.",
    "Top level: {name}{why}.",
    "Broad category: {name}{why}.",
)
GROUP = (
    "Within that, the {name} group fits{why}.",
    "Next level: {name}{why}.",
    "It narrows to {name}{why}.",
)
CONCLUDE = (
    "The specific diagnosis is {name}.",
    "This points to {name}.",
    "Most specific level: {name}.",
)
RULE = (
    "The decisive cue is the {cue}.",
    "Key rule: {cue} marks {name}.",
    "Deciding sign: {cue}.",
)
FIRST_IMPRESSION = (
    "First impression: {x}.",
    "At first glance this suggests {x}.",
    "Initially {x} comes to mind.",
)
REFUTE = (
    "But {x} would show {xf}, while this has {own}.",
    "However, {x} typically has {xf}, not {own}.",
    "Yet {x} does not fit the {own}, as it would show {xf}.",
)
SWITCH = (
    "So I switch to {name}.",
    "The diagnosis is therefore revised to {name}.",
    "I revise the impression to {name}.",
)
KEEP = (
    "A differential is {x}, which would show {xf}; that is not seen here, so I keep {name}.",
    "{X} was considered, but it typically has {xf}; with {own} here, I keep {name}.",
    "Could this be {x}? {X} would show {xf} instead of {own}, so {name} stays the diagnosis.",
)
GENERIC_DIFFERENTIAL_FEATURE = "a different pattern"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


class TemplateWriter:
    name = "template"

    def __init__(self, context: Context, seed: int = 0):
        self.context = context
        self.seed = seed

    def generate(self, jobs: Sequence[Job]) -> list[Generation]:
        return [Generation(self.write(job)) for job in jobs]

    # ----------------------------------------------------------------- pieces
    def _features(self, node_id: str) -> list[str]:
        """The node's visible features, topped up from its ancestors (nearest first) when short."""
        kb = self.context.kb
        features = list(kb.visible_features(node_id))
        for ancestor in self.context.taxonomy.path(node_id)[-2::-1]:
            if len(features) >= 2:
                break
            features += [f for f in kb.visible_features(ancestor) if f not in features]
        return features

    def _why(self, node_id: str, rng: random.Random) -> str:
        features = self.context.kb.visible_features(node_id)
        return f" ({rng.choice(features)})" if features else ""

    def _walk(self, node_id: str, rng: random.Random) -> list[str]:
        """One sentence per level above `node_id` (category first, then groups)."""
        taxonomy = self.context.taxonomy
        sentences = []
        for depth, level in enumerate(taxonomy.path(node_id)[:-1], start=1):
            phrasings = CATEGORY if depth == 1 else GROUP
            sentences.append(rng.choice(phrasings).format(name=taxonomy.node(level).name, why=self._why(level, rng)))
        return sentences

    # ----------------------------------------------------------------- the trajectory
    def write(self, job: Job) -> str:
        taxonomy, plan = self.context.taxonomy, job.plan
        node_id = job.node_id
        rng = seeded_rng(self.seed, job.record.record_id, "template")
        name = taxonomy.node(node_id).name
        features = self._features(node_id)
        shown = rng.sample(features, k=min(2, len(features)))
        if len(shown) == 2:
            observation = rng.choice(OBSERVE_TWO).format(a=shown[0], b=shown[1])
        elif shown:
            observation = rng.choice(OBSERVE_ONE).format(a=shown[0])
        else:
            observation = rng.choice(OBSERVE_NONE)
        sentences = [observation]
        if plan.differential is not None:
            x = taxonomy.node(plan.differential).name
            own, xf = self._contrast(node_id, plan.differential, shown, rng)
        if plan.trajectory_type in SWITCH_TYPES:
            sentences.append(rng.choice(FIRST_IMPRESSION).format(x=x))
            sentences.append(rng.choice(REFUTE).format(x=x, xf=xf, own=own))
            sentences += self._walk(node_id, rng)
            sentences.append(rng.choice(SWITCH).format(name=name))
        else:
            sentences += self._walk(node_id, rng)
            if plan.trajectory_type == "direct":
                sentences.append(rng.choice(RULE).format(cue=self._cue(node_id, shown, rng), name=name))
            sentences.append(rng.choice(CONCLUDE).format(name=name))
            if plan.trajectory_type in KEEP_TYPES:
                sentences.append(rng.choice(KEEP).format(x=x, X=_cap(x), xf=xf, own=own, name=name))
        reasoning = " ".join(_cap(s) for s in sentences)
        return self.context.fmt.render(reasoning, name, taxonomy.malignancy(node_id))

    def _cue(self, node_id: str, shown: list[str], rng: random.Random) -> str:
        """The feature that decides the rule: the node's own, not shared with its ancestors or its
        DDx neighbours (keratin speckle is common to every epidermal lesion), unmentioned if possible."""
        taxonomy = self.context.taxonomy
        shared = {f for level in taxonomy.path(node_id)[:-1] for f in self.context.kb.visible_features(level)}
        for neighbour in self.context.graph.get(node_id, ((), ""))[0]:
            shared |= self._closure(neighbour)
        own = [f for f in self.context.kb.visible_features(node_id) if f not in shared]
        fresh = [f for f in own if f not in shown]
        pool = fresh or own or shown
        return rng.choice(pool) if pool else "overall appearance"

    def _closure(self, node_id: str) -> set[str]:
        """Visible features of a node and of all its ancestors."""
        kb = self.context.kb
        return {f for level in self.context.taxonomy.path(node_id) for f in kb.visible_features(level)}

    def _contrast(self, node_id: str, differential: str, shown: list[str], rng: random.Random) -> tuple[str, str]:
        """(a feature of the node, a feature of the differential) that the other does not share.

        Both images of an epidermal group carry keratin speckle, so "the keratin speckle does not
        fit seborrheic keratosis" would teach a false contrast; shared features are skipped.
        """
        kb = self.context.kb
        theirs, ours = self._closure(differential), self._closure(node_id)
        own = [f for f in kb.visible_features(node_id) if f not in theirs] or [f for f in shown if f not in theirs]
        own_pick = next((f for f in shown if f in own), None) or (rng.choice(own) if own else None)
        other = [f for f in kb.visible_features(differential) if f not in ours]
        return (
            own_pick or (shown[0] if shown else "overall appearance"),
            rng.choice(other) if other else GENERIC_DIFFERENTIAL_FEATURE,
        )
