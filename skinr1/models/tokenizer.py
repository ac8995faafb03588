"""A small byte-level BPE tokenizer for the tiny test model, trained locally (no model hub).

The special tokens and chat template follow Qwen2.5-VL's, so the same processor, vLLM model class
and prompt code serve the tiny model and the real 7B one.
"""

from __future__ import annotations

from typing import Iterable

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Qwen2-VL's chat layout: one image placeholder per image item; the processor expands it into
# as many <|image_pad|> tokens as the image has merged patches.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' or item['type'] == 'image_url' %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 2048):
    """Train a byte-level BPE on `corpus` and wrap it as a `PreTrainedTokenizerFast`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable: no <unk>
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.model_max_length = 4096
    return tokenizer


def tokenizer_corpus() -> list[str]:
    """Text the tokenizer is trained on: the taxonomy's vocabulary plus prompt and reasoning prose.

    Byte-level BPE can encode anything; training on the words the model will actually read and
    write keeps sequences short, which is what makes CPU training and generation fast.
    """
    from skinr1.taxonomy import default_taxonomy

    taxonomy = default_taxonomy()
    lines: list[str] = []
    for node in taxonomy.nodes.values():
        lines.append(node.name)
        lines.extend(node.synonyms)
        lines.append(" > ".join(taxonomy.path_names(node.id)))
        if node.description:
            lines.append(node.description)
    lines.extend(_PROSE)
    lines.extend(_project_prose())
    for tag in ("thinking", "final diagnosis", "think", "answer"):
        lines.append(f"<{tag}> </{tag}>")
    # Repeat the domain text so its merges win over rare byte pairs.
    return lines * 4


def _project_prose() -> list[str]:
    """System prompts, question templates, template-writer phrasing and the knowledge base."""
    from pathlib import Path

    from skinr1.prompts import CHOICE_QUESTIONS, OPEN_QUESTIONS, system_prompt
    from skinr1.trajectories import writers_template

    lines = [system_prompt(mode="open"), system_prompt(mode="choice"), *OPEN_QUESTIONS, *CHOICE_QUESTIONS]
    for value in vars(writers_template).values():
        if isinstance(value, tuple) and value and all(isinstance(v, str) for v in value):
            lines.extend(value)
    knowledge = Path(writers_template.__file__).resolve().parent.parent / "knowledge"
    lines.extend(path.read_text(encoding="utf-8") for path in sorted(knowledge.glob("*.md")))
    return lines


_PROSE = [
    "You are a dermatologist. Look at the image of the skin and reason step by step.",
    "First decide the broad category: benign, malignant or non-neoplastic.",
    "Then decide the group of the lesion, then the specific disease.",
    "Weigh the differential diagnosis before you answer.",
    "What is the diagnosis of the skin condition shown in this image?",
    "Which of the following is the most specific correct diagnosis? Answer with the letter.",
    "The image shows a lesion with an irregular border, uneven colour and asymmetry.",
    "The lesion is a well-circumscribed, symmetric, uniformly pigmented papule.",
    "A pearly translucent nodule with rolled borders and fine telangiectasia.",
    "A scaly, keratotic, hyperkeratotic plaque on sun-exposed skin.",
    "Stuck-on, waxy, verrucous papule with a warty surface.",
    "A firm dermal nodule that dimples when pinched.",
    "Well-demarcated erythematous plaques with silvery scale on the extensor surfaces.",
    "Depigmented, milky-white macules and patches with sharp borders.",
    "The colour is dark brown, black, blue, red, pink, tan, white, grey, yellow or skin-coloured.",
    "The border is regular, smooth, sharp, irregular, notched, blurred or ill-defined.",
    "The shape is round, oval, asymmetric, annular, linear or diffuse.",
    "The texture is smooth, scaly, crusted, ulcerated, shiny, rough, flat or raised.",
    "Considering the differential, the features favour the primary diagnosis, so I keep it.",
    "Compared with the differential, the features fit the alternative better, so I switch to it.",
    "This places it in the category, within the group, and the diagnosis is the disease.",
    "benign precancerous malignant non-neoplastic inflammatory epidermal dermal melanocyte",
    "A. B. C. D. (benign) (malignant) (precancerous) (non-neoplastic)",
]
