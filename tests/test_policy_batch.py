"""The learner's batch building and log-probs do each piece of work once, with unchanged results.

Real tiny Qwen2.5-VL model, real processor and PEFT LoRA, in process (no DeepSpeed): a group's
prompt is processed once per step, its image goes through the vision tower and its prompt through
the language model once per micro-batch, and the completions' log-probs (and their gradients)
equal those of a plain forward over every row written out in full.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from learner.grpo import logprobs_and_entropy
from learner.policy_batch import (TrainSample, encode_batch, full_sequence_logits, require_precomputed_image_features, token_logprobs,
                                  token_logprobs_and_entropy, vision_language_model)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    """The tiny model under a LoRA adapter whose B is non-zero (so the adapter and its gradient matter)."""
    from learner.lora import LoraSettings, apply_lora
    from skinr1.models.loading import load_policy, load_processor

    torch.manual_seed(0)
    model = apply_lora(load_policy(tiny_model_dir), LoraSettings(rank=8, alpha=16, dropout=0.0))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return model.eval(), load_processor(tiny_model_dir)


class CountingProcessor:
    """The real processor, counting its calls."""

    def __init__(self, processor):
        self.processor, self.calls = processor, 0
        self.tokenizer = processor.tokenizer

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.processor(*args, **kwargs)


def _prompt(processor, question: str) -> str:
    return processor.tokenizer.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}],
        add_generation_prompt=True, tokenize=False,
    )


def _groups(processor, tmp_path) -> list[TrainSample]:
    """Two groups of two completions: different images (sizes, so image-token counts differ),
    different prompts and completion lengths, so prompts end at different positions."""
    small, large = tmp_path / "small.png", tmp_path / "large.png"
    Image.new("RGB", (56, 56), (25, 25, 80)).save(small)
    Image.new("RGB", (112, 84), (120, 40, 30)).save(large)
    generator = torch.Generator().manual_seed(1)

    def sample(prompt, image, length, advantage):
        ids = torch.randint(10, 200, (length,), generator=generator).tolist()
        return TrainSample(prompt, str(image), ids, [-1.0] * length, advantage)

    first = _prompt(processor, "What is the diagnosis?")
    second = _prompt(processor, "Describe the lesion and name the most likely diagnosis.")
    return [sample(first, small, 7, 1.0), sample(first, small, 12, -1.0),
            sample(second, large, 5, 0.5), sample(second, large, 9, -0.5)]


def _full_sequence_logprobs(model, encoded):
    """The reference computation: every row written out in full with its own image."""
    return logprobs_and_entropy(full_sequence_logits(model, encoded), encoded["targets"], 1.0)


def test_a_group_prompt_is_processed_once_per_step(policy, tmp_path):
    _, processor = policy
    counting = CountingProcessor(processor)
    samples = _groups(processor, tmp_path)
    cache: dict = {}
    batches = [encode_batch(counting, samples[i : i + 2], prompts=cache) for i in (0, 2)]
    again = encode_batch(counting, samples[:2], prompts=cache)  # a later micro-batch of the same step
    assert counting.calls == 2  # two (prompt, image) pairs, however many completions and batches
    # The same tensors as processing each sample on its own; a group's prompt and pixels held once.
    for batch, start in zip(batches, (0, 2)):
        assert batch["rows"].tolist() == [0, 0] and batch["prompts"]["input_ids"].shape[0] == 1
        for i in range(2):
            alone = encode_batch(processor, [samples[start + i]])
            for key in ("input_ids", "mm_token_type_ids", "pixel_values", "image_grid_thw"):
                assert torch.equal(batch["prompts"][key], alone["prompts"][key]), key
            length = len(samples[start + i].completion_ids)
            assert batch["targets"][i, :length].tolist() == samples[start + i].completion_ids
            assert batch["completion_attention"][i].sum() == length == alone["targets"].shape[1]
    assert torch.equal(again["prompts"]["input_ids"], batches[0]["prompts"]["input_ids"])


def test_distinct_prompts_are_left_padded_and_completions_right_padded(policy, tmp_path):
    _, processor = policy
    samples = _groups(processor, tmp_path)
    encoded = encode_batch(processor, samples)
    prompts = encoded["prompts"]
    lengths = [len(encode_batch(processor, [s])["prompts"]["input_ids"][0]) for s in samples[::2]]
    assert lengths[0] != lengths[1] and prompts["input_ids"].shape == (2, max(lengths))
    assert prompts["attention_mask"].sum(dim=1).tolist() == lengths
    assert prompts["attention_mask"][:, -1].all()  # every prompt ends in the last column
    assert encoded["completion_attention"].sum(dim=1).tolist() == [len(s.completion_ids) for s in samples]
    assert torch.equal(encoded["mask"] > 0, encoded["completion_attention"] > 0)


def test_the_vision_tower_sees_each_distinct_image_once(policy, tmp_path):
    model, processor = policy
    encoded = encode_batch(processor, _groups(processor, tmp_path))
    assert encoded["rows"].tolist() == [0, 0, 1, 1]
    images_seen = []
    visual = model.get_base_model().model.visual
    hook = visual.register_forward_hook(lambda _m, _a, kwargs, _o: images_seen.append(kwargs["grid_thw"].shape[0]), with_kwargs=True)
    try:
        with torch.no_grad():
            token_logprobs(model, encoded, 1.0)
    finally:
        hook.remove()
    assert images_seen == [2], images_seen  # one pass over the two distinct images, not four


def test_the_language_model_sees_each_prompt_once_per_micro_batch(policy, tmp_path):
    model, processor = policy
    samples = _groups(processor, tmp_path)
    encoded = encode_batch(processor, samples)
    tokens = []
    embed = vision_language_model(model).language_model.embed_tokens
    hook = embed.register_forward_hook(lambda _m, args, _o: tokens.append(args[0].numel()))
    try:
        with torch.no_grad():
            token_logprobs(model, encoded, 1.0)
    finally:
        hook.remove()
    prompts = encoded["prompts"]["input_ids"]
    completion = encoded["targets"].shape[1]
    # Two prompt rows, then every row's completion but its last token (which predicts nothing scored).
    assert tokens == [prompts.numel(), len(samples) * (completion - 1)], tokens
    assert sum(tokens) < sum(int(n) for n in encoded["prompts"]["attention_mask"].sum(dim=1)[encoded["rows"]]) + encoded["completion_attention"].sum()


def test_shared_prompt_logprobs_and_gradients_equal_the_full_sequence(policy, tmp_path):
    model, processor = policy
    encoded = encode_batch(processor, _groups(processor, tmp_path))
    mask = encoded["mask"] > 0
    assert not encoded["prompts"]["attention_mask"].all()  # prompts of different lengths: left padding is exercised
    trainable = [p for p in model.parameters() if p.requires_grad]

    def gradients(logprobs):
        model.zero_grad(set_to_none=True)
        (logprobs * encoded["mask"] * encoded["advantages"].unsqueeze(1)).sum().backward()
        return [p.grad.clone() for p in trainable]

    window, window_entropy = token_logprobs_and_entropy(model, encoded, 1.0)
    window_grads = gradients(window)
    full, full_entropy = _full_sequence_logprobs(model, encoded)
    full_grads = gradients(full)
    assert window.shape == full.shape == encoded["mask"].shape
    # The prompt's keys come from another matmul shape than in the full rows: float32 rounding
    # only (a few units in the last place of log-probs around -8; a wrong position or mask is ~1).
    torch.testing.assert_close(window[mask], full[mask], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(window_entropy[mask], full_entropy[mask], rtol=1e-6, atol=1e-6)
    assert any(g.abs().sum() > 0 for g in full_grads)
    # Summation order differs (a shared image's gradient is summed over its rows): float rounding only.
    scale = max(float(g.abs().max()) for g in full_grads)
    for got, want in zip(window_grads, full_grads):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5 * scale)


def test_reference_pass_with_the_adapter_disabled_shares_images_too(policy, tmp_path):
    """The KL reference (adapter disabled, merger included) scores the same as a full forward."""
    model, processor = policy
    encoded = encode_batch(processor, _groups(processor, tmp_path))
    mask = encoded["mask"] > 0
    with torch.no_grad(), model.disable_adapter():
        window = token_logprobs(model, encoded, 0.7)
        full = logprobs_and_entropy(full_sequence_logits(model, encoded), encoded["targets"], 0.7)[0]
    with torch.no_grad():
        adapted = token_logprobs(model, encoded, 0.7)
    torch.testing.assert_close(window[mask], full[mask], rtol=1e-6, atol=1e-6)  # float32 rounding, as above
    assert (adapted[mask] - window[mask]).abs().max() > 1e-4  # the adapter was really off


def test_a_backbone_that_would_drop_precomputed_image_features_is_refused(policy):
    """transformers 5.17's Qwen2.5-VL forward takes no mm_encoder_outputs and swallows it into
    **kwargs; on that release the level-1 GPU check measured a 3-nat mean log-prob error."""
    model, _ = policy

    class ForwardWithoutImageFeatures:  # that release's signature, in short
        def forward(self, input_ids=None, pixel_values=None, image_grid_thw=None, **kwargs):
            raise AssertionError("never called")

    require_precomputed_image_features(vision_language_model(model))  # the installed release takes them
    with pytest.raises(RuntimeError, match="takes no mm_encoder_outputs"):
        require_precomputed_image_features(ForwardWithoutImageFeatures())


@pytest.mark.parametrize("aggregation", ["token_mean", "sequence_mean"])
def test_length_grouped_micro_batches_give_the_same_step_loss_and_gradient(policy, tmp_path, aggregation):
    from learner.grpo import grpo_token_losses, mean_over_step, step_denominator
    from learner.micro_batches import encode_micro_batches

    model, processor = policy
    samples = _groups(processor, tmp_path)
    short = [TrainSample(s.prompt, s.image, s.completion_ids[:3], s.rollout_logprobs[:3], -s.advantage) for s in samples[:2]]
    samples = [samples[0], short[0], samples[1], short[1], *samples[2:]]  # completions of 7, 3, 12, 3, 5, 9 tokens
    size = step_denominator([len(s.completion_ids) for s in samples], [s.weight for s in samples], aggregation)
    trainable = [p for p in model.parameters() if p.requires_grad]

    def step(by_length: bool):
        batches = encode_micro_batches(processor, samples, None, 2, 1, by_length).encoded
        model.zero_grad(set_to_none=True)
        total = 0.0
        for batch in batches:
            logprobs = token_logprobs(model, batch, 1.0)
            parts = grpo_token_losses(logprobs, logprobs.detach(), None, batch["rollout_logprobs"], batch["advantages"],
                                      0.2, 0.28, 0.0, "k3", 2.0)
            loss = mean_over_step(parts["total"], batch["mask"], size, aggregation)
            loss.backward()
            total += float(loss.detach())
        widths = sum(b["mask"].numel() for b in batches)
        return total, [p.grad.clone() for p in trainable], widths

    arrival_loss, arrival_grads, arrival_cells = step(False)
    grouped_loss, grouped_grads, grouped_cells = step(True)
    assert grouped_cells < arrival_cells  # less padding
    assert grouped_loss == pytest.approx(arrival_loss, rel=1e-5, abs=1e-8)
    scale = max(float(g.abs().max()) for g in arrival_grads)
    assert scale > 0
    for got, want in zip(grouped_grads, arrival_grads):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("per_pass", [2, 3, 4])
def test_scoring_passes_give_each_micro_batch_its_own_logprobs(policy, tmp_path, per_pass):
    """Merging micro-batches into larger no-grad passes (rl.learner.score_micro_batch_size) gives
    every micro-batch the rows and completion width it has alone, with the same log-probs, however
    the passes cut the step's 3 micro-batches (2 and a shorter last pass; all 3; more than there are)."""
    from learner.micro_batches import encode_micro_batches, score_in_passes

    model, processor = policy
    samples = _groups(processor, tmp_path)
    short = [TrainSample(s.prompt, s.image, s.completion_ids[:3], s.rollout_logprobs[:3], -s.advantage) for s in samples[:2]]
    samples = [samples[0], short[0], samples[1], short[1], *samples[2:]]  # completions of 7, 3, 12, 3, 5, 9 tokens
    step = encode_micro_batches(processor, samples, None, 2, 1, by_length=True)
    assert len(step.encoded) == 3
    passes = []

    def score(batch):
        passes.append(batch["targets"].shape[0])
        return token_logprobs(model, batch, 0.7)

    with torch.no_grad():
        alone = [token_logprobs(model, batch, 0.7) for batch in step.encoded]
        merged = score_in_passes(score, step, processor, None, per_pass)
    assert passes == {2: [4, 2], 3: [6], 4: [6]}[per_pass]
    assert len(merged) == len(alone)
    for got, want, batch in zip(merged, alone, step.encoded):
        assert got.shape == want.shape == batch["targets"].shape
        mask = batch["completion_attention"].bool()
        torch.testing.assert_close(got[mask], want[mask], rtol=0, atol=1e-5)


def test_one_micro_batch_per_scoring_pass_scores_the_micro_batches_themselves(policy, tmp_path):
    from learner.micro_batches import encode_micro_batches, score_in_passes

    model, processor = policy
    step = encode_micro_batches(processor, _groups(processor, tmp_path), None, 2, 1, by_length=True)
    seen = []
    assert score_in_passes(lambda batch: seen.append(batch) or len(seen), step, processor, None, 1) == [1, 2]
    assert seen == step.encoded
    with pytest.raises(ValueError, match="micro_batches_per_pass"):
        score_in_passes(lambda batch: None, step, processor, None, 0)
