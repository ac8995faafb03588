"""When an evaluation engine can serve the next checkpoint by reloading its weights."""

from __future__ import annotations

import json

from skinr1.eval.engines import same_serving_files


def _checkpoint(path, **config):
    path.mkdir()
    base = {"architectures": ["Qwen2_5_VLForConditionalGeneration"], "hidden_size": 128, "_name_or_path": str(path),
            "transformers_version": "5.19.0"}
    (path / "config.json").write_text(json.dumps({**base, **config}))
    (path / "tokenizer.json").write_text('{"model": {"vocab": {"a": 0, "b": 1}}}')
    (path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 1024, "is_local": path.name == "b"}))
    (path / "chat_template.jinja").write_text("{{ messages }}")
    return path


def test_checkpoints_that_differ_only_in_where_they_were_written_share_an_engine(tmp_path):
    a, b = _checkpoint(tmp_path / "a"), _checkpoint(tmp_path / "b")
    assert same_serving_files(str(a), str(b))


def test_another_architecture_tokenizer_template_or_processor_needs_its_own_engine(tmp_path):
    a = _checkpoint(tmp_path / "a")
    assert not same_serving_files(str(a), str(_checkpoint(tmp_path / "wider", hidden_size=256)))
    assert not same_serving_files(str(a), str(_checkpoint(tmp_path / "bf16", dtype="bfloat16")))
    vocab = _checkpoint(tmp_path / "vocab")
    (vocab / "tokenizer.json").write_text('{"model": {"vocab": {"a": 0, "c": 1}}}')
    assert not same_serving_files(str(a), str(vocab))
    template = _checkpoint(tmp_path / "template")
    (template / "chat_template.jinja").write_text("{{ messages | reverse }}")
    assert not same_serving_files(str(a), str(template))
    processor = _checkpoint(tmp_path / "processor")
    (processor / "processor_config.json").write_text('{"max_pixels": 50176}')
    assert not same_serving_files(str(a), str(processor))  # a file only one of them has


def test_a_hub_id_or_a_missing_directory_never_shares_an_engine(tmp_path):
    a = _checkpoint(tmp_path / "a")
    assert not same_serving_files(str(a), "Qwen/Qwen2.5-VL-3B-Instruct")
    assert not same_serving_files("Qwen/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen2.5-VL-3B-Instruct")
    assert not same_serving_files(str(tmp_path / "gone"), str(a))


def test_a_layer_split_between_two_shards_is_reloaded_in_one_bucket(tmp_path):
    """A sharded checkpoint may put a layer's q and k projections in different files; vLLM's in-place
    reload rebuilds a fused layer from what one call carries, so the shards are regrouped."""
    import torch
    from safetensors.torch import save_file

    from learner.weight_sync import weight_group
    from rollout.weight_update import layer_whole_buckets

    layer = "model.language_model.layers.{}.self_attn.{}_proj.weight"
    save_file({layer.format(0, "q"): torch.ones(2, 2), layer.format(0, "k"): torch.ones(2, 2), layer.format(1, "q"): torch.ones(2, 2)},
              str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file({layer.format(1, "k"): torch.zeros(2, 2), layer.format(1, "v"): torch.zeros(2, 2)},
              str(tmp_path / "model-00002-of-00002.safetensors"))
    buckets = layer_whole_buckets(sorted(tmp_path.glob("*.safetensors")), bucket_bytes=16)  # one 2x2 float32 each
    assert [sorted({weight_group(name) for name, _ in bucket}) for bucket in buckets] == [
        ["model.language_model.layers.0"], ["model.language_model.layers.1"]]
    assert sorted(name for bucket in buckets for name, _ in bucket) == sorted(
        [layer.format(0, "q"), layer.format(0, "k"), layer.format(1, "q"), layer.format(1, "k"), layer.format(1, "v")])
