"""Perception pretraining of the tiny demo model: image captions of what is visible, never a diagnosis.

A real base VLM (Qwen2.5-VL) arrives having seen billions of captioned images: it can say "a
blue-black lesion with an irregular border on dark skin" before it has learned any dermatology.
The demo's ~1M-parameter model is built with random weights, so without this stage its vision
encoder is random: SFT on the (light-skinned) dense set then binds the diagnosis to pixel
statistics of light skin and fails on darker skin, and RL on the diverse sparse set has nothing to
amplify there (every sample of a dark-skin group earns zero).

This stage gives the tiny model a generalist's eyes in about a minute: it renders lesions of all
eight demo classes on all six Fitzpatrick types (a random stream of its own, disjoint from the
data splits) and trains every weight to describe them: the skin tone and the visible features that
the knowledge base lists for the lesion's category, group and disease. Captions never name a
category, group or disease, so the pretrained model still scores zero on diagnosis (`base` in the
evaluation report) and the dermatology comes from SFT and RL.
"""

from __future__ import annotations

import random
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

SKIN_TONE_WORDS: dict[int, str] = {
    1: "very light",
    2: "light",
    3: "light brown",
    4: "moderate brown",
    5: "dark brown",
    6: "very dark brown",
}
"""How a caption names the background skin of each Fitzpatrick type."""

CAPTION_QUESTIONS = (
    "Describe the image.",
    "What is visible in this image?",
    "Describe what you see on the skin.",
)
SKIN_SENTENCES = ("The skin is {tone}.", "Background: {tone} skin.", "This is {tone} skin.")
FEATURE_SENTENCES = ("The image shows {items}.", "I see {items}.", "Visible here are {items}.")


@dataclass(frozen=True)
class PerceptionSettings:
    """How the tiny base model learns to describe images before any dermatology."""

    images: int = 0
    """Captioned images rendered for the stage (spread evenly over the demo classes and the six
    skin types); 0 skips the stage (a random-weight base model)."""
    epochs: int = 2
    """Passes over the captioned images."""
    learning_rate: float = 1.0e-3
    """AdamW learning rate of the full-weight update (cosine decay to 0 after a 5% warm-up)."""
    batch_size: int = 16
    """Captions per optimizer step."""

    def __post_init__(self) -> None:
        from skinr1.config.checks import above, at_least

        # Keys relative to the section: the loader prefixes model.perception_pretraining.
        at_least("images", self.images, 0)
        at_least("epochs", self.epochs, 1)
        above("learning_rate", self.learning_rate, 0)
        at_least("batch_size", self.batch_size, 1)

    @property
    def enabled(self) -> bool:
        return self.images > 0


def caption_features(path: Sequence[str], visible_features) -> list[str]:
    """The visible features of every level of a taxonomy path (category, group, disease), deduplicated
    in order: what the rendered image shows. `visible_features(node_id)` reads the knowledge base."""
    features: list[str] = []
    for node_id in path:
        for feature in visible_features(node_id):
            if feature not in features:
                features.append(feature)
    return features


def write_caption(features: Sequence[str], fitzpatrick: int, rng: random.Random) -> str:
    """One caption: the skin tone and 2-4 of the features, in random order and phrasing."""
    if not features:
        raise ValueError("a caption needs at least one visible feature")
    chosen = rng.sample(list(features), k=min(len(features), rng.randint(2, 4)))
    items = chosen[0] if len(chosen) == 1 else ", ".join(chosen[:-1]) + " and " + chosen[-1]
    sentences = [rng.choice(SKIN_SENTENCES).format(tone=SKIN_TONE_WORDS[fitzpatrick]),
                 rng.choice(FEATURE_SENTENCES).format(items=items)]
    if rng.random() < 0.5:
        sentences.reverse()
    return " ".join(sentences)


def caption_plan(images: int, leaves: Sequence[str], skin_types: Sequence[int], seed: int) -> list[tuple[str, int, int]]:
    """(leaf, skin type, index) of every captioned image: classes and skin types evenly crossed."""
    cells = [(leaf, fitzpatrick) for leaf in leaves for fitzpatrick in skin_types]
    plan = [(*cells[i % len(cells)], i) for i in range(images)]
    random.Random(seed).shuffle(plan)
    return plan


def pretrain_perception(model_dir: str | Path, settings: PerceptionSettings, seed: int = 0) -> dict:
    """Train every weight of the model at `model_dir` on rendered, captioned images and save it back
    in place (safetensors). Returns a summary: images, steps, first and last caption loss, seconds."""
    import numpy as np
    import torch
    from PIL import Image

    from learner.sft_data import SFTRecord, collate, encode_record
    from skinr1.data.synthetic import DEMO_LEAVES, load_taxonomy
    from skinr1.data.synthetic_render import SKIN_TONES, render
    from skinr1.models.loading import load_policy, load_processor
    from tqdm import tqdm

    from skinr1.progress import progress_enabled
    from skinr1.trajectories.knowledge_base import load_knowledge_base

    started = time.perf_counter()
    taxonomy = load_taxonomy()
    knowledge = load_knowledge_base(None, taxonomy)
    processor = load_processor(model_dir)
    model = load_policy(model_dir)
    rng = random.Random(seed)
    plan = caption_plan(settings.images, DEMO_LEAVES, sorted(SKIN_TONES), seed)
    encoded = []
    with tempfile.TemporaryDirectory(prefix="skinr1-captions-") as scratch:
        for leaf, fitzpatrick, index in plan:
            # A stream of its own (tag 7), disjoint from every data split's ([seed, split, leaf, i, 0]).
            pixels = render(leaf, fitzpatrick, np.random.default_rng([seed, 7, DEMO_LEAVES.index(leaf), index]))
            image_path = Path(scratch) / f"caption_{index:05d}.png"
            Image.fromarray(pixels, mode="RGB").save(image_path)
            caption = write_caption(caption_features(taxonomy.path(leaf), knowledge.visible_features), fitzpatrick, rng)
            messages = [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": rng.choice(CAPTION_QUESTIONS)}]},
                {"role": "assistant", "content": [{"type": "text", "text": caption}]},
            ]
            encoded.append(encode_record(processor, SFTRecord(id=f"caption:{index}", image=str(image_path), messages=messages),
                                         max_length=512))

    torch.manual_seed(seed)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=0.0)
    steps_per_epoch = -(-len(encoded) // settings.batch_size)
    total = steps_per_epoch * settings.epochs
    warmup = max(1, total // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * min(1.0, step / total))))
    pad = processor.tokenizer.pad_token_id
    losses: list[float] = []
    order = np.random.default_rng([seed, 7, 99])
    with tqdm(total=total, desc="perception pretraining", unit="step", disable=not progress_enabled()) as bar:
        for _ in range(settings.epochs):
            permutation = order.permutation(len(encoded))
            for start in range(0, len(encoded), settings.batch_size):
                batch = collate([encoded[i] for i in permutation[start:start + settings.batch_size]], pad)
                loss = model(**batch).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(float(loss.detach()))
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    model.save_pretrained(model_dir, safe_serialization=True)
    window = max(1, steps_per_epoch // 4)
    return {
        "settings": asdict(settings),
        "images": len(encoded),
        "steps": total,
        "caption_loss_first": round(float(np.mean(losses[:window])), 4),
        "caption_loss_last": round(float(np.mean(losses[-window:])), 4),
        "seconds": round(time.perf_counter() - started, 1),
    }


def pretrain_perception_in_subprocess(model_dir: str | Path, settings: PerceptionSettings, seed: int = 0) -> dict:
    """`pretrain_perception` in a fresh (spawned) process: the pipeline's driver then keeps neither the
    training's memory (~2 GB for the demo) nor its hundreds of thousands of Python objects, which it
    would otherwise carry (and garbage-collect) through every later stage."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(pretrain_perception, str(model_dir), settings, seed).result()
