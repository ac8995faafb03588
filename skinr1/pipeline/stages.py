"""Pipeline stages. Each one writes a `stage.json` marker last; a finished stage whose inputs did
not change is reused instead of recomputed (unless `fresh`).

Markers are portable: a path inside the run directory is recorded relative to it (as
`<run_dir>/...`) and input artifacts are identified by content, so a run directory that was copied
or moved reuses its finished stages."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from skinr1.config.schema import TINY_MODEL, SkinR1Config
from skinr1.pipeline.summaries import grpo_summary, sft_summary

MARKER = "stage.json"
PENDING = "stage.pending.json"
RUN_DIR_TOKEN = "<run_dir>"
SAMPLED_HASH_ABOVE = 64 * 1024 * 1024
"""Files larger than this (model weights) are identified by size and three 1 MiB samples, not read whole."""
_SAMPLE = 1024 * 1024
"""Written when a stage starts: which settings its partial work (checkpoints) was made with."""


class UnfinishedStageConflict(ValueError):
    """An unfinished stage's partial work was made with other settings than this run asks for."""


def portable(value: Any, root: Path | None) -> Any:
    """`value` (settings, results: dataclasses, dicts, lists, strings) with every absolute path
    inside `root` written as `<run_dir>/relative`, so that it does not change when the run moves."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {key: portable(item, root) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(item, root) for item in value]
    if isinstance(value, Path):
        value = str(value)
    if root is not None and isinstance(value, str) and value.startswith("/"):
        path = Path(value)
        if path == root:
            return RUN_DIR_TOKEN
        if root in path.parents:
            return f"{RUN_DIR_TOKEN}/{path.relative_to(root)}"
    return value


def anchored(value: Any, root: Path | None) -> Any:
    """The inverse of `portable`: `<run_dir>/relative` strings as absolute paths under `root`."""
    if isinstance(value, dict):
        return {key: anchored(item, root) for key, item in value.items()}
    if isinstance(value, list):
        return [anchored(item, root) for item in value]
    if root is not None and isinstance(value, str) and value.startswith(RUN_DIR_TOKEN):
        return str(root / value[len(RUN_DIR_TOKEN):].lstrip("/"))
    return value


def _fingerprint(settings: Any, root: Path | None = None) -> str:
    return hashlib.sha256(json.dumps(portable(settings, root), sort_keys=True, default=str).encode()).hexdigest()[:16]


def artifact_identity(path: str | Path) -> dict[str, str]:
    """A path plus a digest of its files' relative names, sizes and contents: a stage whose input
    was rebuilt (same path, new content) must not be reused, while a copy (new modification times,
    perhaps a new place) is the same input."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []
    digest = hashlib.sha256()
    for file in files:
        size = file.stat().st_size
        digest.update(f"{file.relative_to(path) if file != path else file.name}:{size}\n".encode())
        digest.update(_content_digest(file, size))
    return {"path": str(path), "digest": digest.hexdigest()[:16]}


def _content_digest(file: Path, size: int) -> bytes:
    content = hashlib.sha256()
    with open(file, "rb") as handle:
        if size <= SAMPLED_HASH_ABOVE:
            for block in iter(lambda: handle.read(_SAMPLE), b""):
                content.update(block)
        else:  # retrained weights differ throughout; reading gigabytes at every start would not pay
            for offset in (0, size // 2, size - _SAMPLE):
                handle.seek(offset)
                content.update(handle.read(_SAMPLE))
    return content.digest()


def finished_stage(directory: Path, settings: Any, root: Path | None = None) -> dict | None:
    """The stage's marker when it finished with the same settings, else None."""
    marker = directory / MARKER
    if not marker.is_file():
        return None
    record = json.loads(marker.read_text())
    return record if record.get("fingerprint") == _fingerprint(settings, root) else None


def run_stage(name: str, directory: Path, settings: Any, work: Callable[[], dict], fresh: bool = False,
              root: Path | None = None) -> dict:
    """Run `work` unless the stage already finished with these settings; returns its result dict.

    `root` is the run directory: paths inside it are fingerprinted (and results recorded) relative
    to it, so the stage is reused after the run directory is copied or moved."""
    from skinr1 import run_mirror
    from skinr1.data.records import write_text_atomic

    if not fresh:
        run_mirror.pull_stage(directory)  # a run_dir in a bucket: what another node finished
        previous = finished_stage(directory, settings, root)
        if previous is not None:
            print(f"[{name}] reusing the finished stage in {directory}")
            return anchored(previous["result"], root) | {"reused": True}
        if (directory / MARKER).is_file():
            # Finished with other settings or inputs: its checkpoints must not seed this run.
            print(f"[{name}] settings or inputs changed since {directory} finished: recomputing")
            fresh = True
        elif _pending_fingerprint(directory) not in (None, _fingerprint(settings, root)):
            # Resuming would continue another configuration's run (its optimizer, schedule, data
            # order) under this one's name; discarding it silently would lose work.
            raise UnfinishedStageConflict(
                f"{directory} holds an unfinished {name} run started with other settings or inputs; "
                "rerun with --fresh to discard it, or with the settings it started with to resume it"
            )
    if fresh:
        run_mirror.clear_stage(directory)
        shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    fingerprint = _fingerprint(settings, root)
    write_text_atomic(directory / PENDING, json.dumps({"stage": name, "fingerprint": fingerprint}))
    run_mirror.push_files(directory, [directory / PENDING])
    print(f"[{name}] running in {directory}")
    started = time.perf_counter()
    result = work()
    record = {"stage": name, "fingerprint": fingerprint, "seconds": time.perf_counter() - started,
              "result": portable(result, root)}
    write_text_atomic(directory / MARKER, json.dumps(record, indent=2, default=str))
    (directory / PENDING).unlink(missing_ok=True)
    run_mirror.push_stage(directory)
    print(f"[{name}] done in {record['seconds']:.0f} s")
    return result | {"seconds": record["seconds"], "reused": False}


def _pending_fingerprint(directory: Path) -> str | None:
    pending = directory / PENDING
    return json.loads(pending.read_text()).get("fingerprint") if pending.is_file() else None


def base_model_stage(config: SkinR1Config, fresh: bool = False) -> str:
    """The base policy: a local checkpoint or hub id as given, or the tiny model built on demand."""
    if config.model.name_or_path != TINY_MODEL:
        from skinr1.storage import cached_model

        return cached_model(config.model.name_or_path)  # a URI: copied once per node
    from skinr1.models.tiny import TinyModelSpec, build_tiny_model

    directory = Path(config.base_model_path)
    spec = TinyModelSpec(seed=config.seed)
    perception = config.model.perception_pretraining
    # Without pretraining the fingerprint stays the spec alone: existing random-weight bases are reused.
    settings = {"spec": spec, "perception": perception} if perception.enabled else spec

    def build() -> dict:
        result = {"path": str(build_tiny_model(directory, spec))}
        if perception.enabled:
            from skinr1.models.perception import pretrain_perception_in_subprocess

            result["perception"] = pretrain_perception_in_subprocess(directory, perception, seed=config.seed)
        return result

    run_stage("base model", directory, settings, build, fresh, root=config.run_path)
    return str(directory)


def data_stage(config: SkinR1Config, fresh: bool = False) -> Path:
    """The manifests: the configured directory, or the synthetic demo set generated on demand."""
    if config.data.dir:
        missing = [n for n in (config.data.dense, config.data.sparse, *config.data.test) if not (config.data_path / n).is_file()]
        if missing:
            raise FileNotFoundError(f"data.dir {config.data_path} lacks {', '.join(missing)}")
        return config.data_path
    from skinr1.data.synthetic import synthesize

    settings = {"seed": config.seed, "scale": config.data.synthetic_scale,
                "dense_skin_types": list(config.data.synthetic_dense_skin_types)}
    directory = config.data_path
    run_stage("data", directory, settings, lambda: synthesize(directory, seed=config.seed, scale=config.data.synthetic_scale,
                                                              dense_skin_types=settings["dense_skin_types"]), fresh,
              root=config.run_path)
    return directory


def trajectories_stage(config: SkinR1Config, data_dir: Path, fresh: bool = False) -> Path:
    """Verified reasoning trajectories for the dense split; returns the SFT JSONL path."""
    from skinr1.trajectories.build import run as build_trajectories

    directory = config.trajectories_dir
    settings = dataclasses.replace(config.trajectories, input=str(data_dir / config.data.dense), output_dir=str(directory))
    run_stage("trajectories", directory, settings, lambda: _summary(build_trajectories(settings)), fresh, root=config.run_path)
    return directory / "sft.jsonl"


def sft_stage(config: SkinR1Config, base_model: str, sft_data: Path, fresh: bool = False) -> Path:
    """The SFT warm start; returns the final policy directory (adapter or full weights)."""
    from learner.sft import run_sft
    from skinr1.config.derive import sft_settings
    from skinr1.trackers import live_stage_rows

    directory = config.sft_dir
    runtime = sft_settings(config)
    settings = {"sft": runtime.sft, "policy": runtime.policy, "base_model": base_model, "data": artifact_identity(sft_data)}
    def work() -> dict:
        from skinr1.run_mirror import remote_for

        remote = remote_for(directory)  # a bucket-backed run: Ray Train writes its checkpoints there
        with live_stage_rows(config, directory, "sft") as publish:
            final = run_sft(base_model, str(sft_data), directory, runtime.sft, runtime.policy,
                            checkpoints=remote.child("ray") if remote is not None else None, on_row=publish)
        return {"final": str(final)}

    run_stage("sft", directory, settings, work, fresh, root=config.run_path)
    _print_summary(directory / "metrics.jsonl", sft_summary)
    return directory / "final"


def _print_summary(metrics: Path, summarize: Callable[[list[dict]], str]) -> None:
    from skinr1.metrics import read_metrics

    if metrics.is_file():
        print(summarize(read_metrics(metrics)))


def _summary(report: dict) -> dict:
    """The JSON-friendly top of a stage report (the full report stays in the stage directory)."""
    return {k: v for k, v in report.items() if isinstance(v, (int, float, str, bool))}


def rl_policy_start(config: SkinR1Config, base_model: str, sft_policy: Path | None):
    """Where GRPO starts (`learner.policy_start.PolicyStart`): by default a fresh adapter on the SFT
    adapter merged into the base (so that "adapters disabled" is the SFT policy, the KL reference);
    with rl.continue_sft_adapter the SFT adapter itself on the bare base, the merged SFT weights
    being the reference; SFT's full weights; or the bare base model."""
    from learner.export import is_adapter, merge_adapter
    from learner.policy_start import PolicyStart
    from skinr1.config.derive import policy_settings

    if not config.rl.init_from_sft or sft_policy is None:
        return PolicyStart(base=base_model)
    if not is_adapter(sft_policy):
        if config.rl.continue_sft_adapter:
            raise ValueError(f"rl.continue_sft_adapter needs a LoRA SFT policy; {sft_policy} holds full weights")
        return PolicyStart(base=str(sft_policy))
    merged = config.rl_dir / "policy_base"
    policy = policy_settings(config)  # merged in the model's dtype; the processor keeps the bounds
    settings = {"sft": str(sft_policy), "base": base_model, "policy": policy}
    run_stage("merge sft", merged, settings,
              lambda: {"path": str(merge_adapter(sft_policy, merged / "model", base=base_model, policy=policy))},
              root=config.run_path)
    if config.rl.continue_sft_adapter:
        return PolicyStart(base=base_model, adapter=str(sft_policy), reference=str(merged / "model"))
    return PolicyStart(base=str(merged / "model"))


# How a GRPO run is operated, not what it trains: a run resumes (or is reused) across changes to these.
OPERATIONAL_RL_SETTINGS = ("stop_after_step", "kill_rollout_actor_at_step", "checkpoint_every", "keep_checkpoints",
                           "probe_every", "probe_prompts", "validate_every", "validate_prompts", "sync_backend",
                           "sync_bucket_mb", "max_reward_error_rate")
OPERATIONAL_ROLLOUT_SETTINGS = ("num_workers", "min_workers", "max_workers", "placement_timeout_s",
                                "startup_timeout_s", "resources")


def rl_training_identity(rl) -> dict[str, Any]:
    """The GRPO settings that decide what is trained (the stage's fingerprint)."""
    settings = dataclasses.asdict(rl)
    for name in OPERATIONAL_RL_SETTINGS:
        settings.pop(name)
    for name in OPERATIONAL_ROLLOUT_SETTINGS:
        settings["rollout"].pop(name)
    return settings


def rl_stage(config: SkinR1Config, base_model: str, sft_policy: Path | None, data_dir: Path, fresh: bool = False) -> Path:
    """Hierarchical GRPO; resumes from the run's last checkpoint; returns the final policy dir."""
    from skinr1.config.derive import rl_settings
    from skinr1.metrics import MetricsLogger
    from skinr1.pipeline.rl_checkpoint import latest_checkpoint, write_final_policy
    from skinr1.pipeline.rl_driver import GRPODriver
    from skinr1.pipeline.scaling import StopRequested
    from skinr1.trackers import open_stage_trackers

    rl_dir = config.rl_dir
    runtime = rl_settings(config)
    marker = {"rl": rl_training_identity(config.rl), "policy": runtime.policy, "reward": config.reward, "data": str(data_dir),
              "sft": artifact_identity(sft_policy) if sft_policy is not None else None}

    def work() -> dict:
        start = rl_policy_start(config, base_model, sft_policy)
        validation = data_dir / config.data.valid if config.data.valid else None
        driver = GRPODriver(runtime, config.reward, start, str(data_dir / config.data.sparse), rl_dir,
                            seed=config.seed, include_system_prompt=config.trajectories.include_system_prompt,
                            validation_manifest=str(validation) if validation else None)
        try:
            try:
                driver.start()  # resumes from the last checkpoint: the steps after it run again
                with MetricsLogger(rl_dir / "metrics.jsonl", trackers=open_stage_trackers(config, rl_dir, "rl"),
                                   resumed_at=driver.step) as logger:
                    driver.run(logger)
            finally:
                driver.shutdown()
        except StopRequested:
            # The policy so far is usable now; the stage stays unfinished (no marker) so that the
            # same command resumes it.
            write_final_policy(latest_checkpoint(rl_dir), rl_dir)
            raise
        final = write_final_policy(latest_checkpoint(rl_dir), rl_dir)
        return {"final": str(final), "steps": driver.step, "startup_s": driver.startup_s}

    # An unfinished run has no marker, so run_stage calls `work`, whose driver resumes from the last checkpoint.
    final = Path(run_stage("rl", rl_dir, marker, work, fresh, root=config.run_path)["final"])
    _print_summary(rl_dir / "metrics.jsonl", grpo_summary)
    return final


def eval_stage(config: SkinR1Config, checkpoints: dict[str, str], data_dir: Path, fresh: bool = False,
               directory: Path | None = None, pairs: list[tuple[str, str]] | None = None) -> dict:
    """Evaluate checkpoints side by side on the held-out manifests; returns the report dict.

    `directory` defaults to <run_dir>/eval; `pairs` are the (from, to) checkpoints whose paired
    differences the report gives (default: each checkpoint against the one before it)."""
    from skinr1.config.derive import eval_settings
    from skinr1.eval.report import compare_checkpoints, write_report
    from skinr1.eval.runner import evaluate_checkpoints
    from skinr1.trackers import publish_report

    directory = directory or config.run_path / "eval"
    settings = eval_settings(config)
    manifests = [str(data_dir / name) for name in config.data.test]
    marker = {"settings": settings, "manifests": manifests, "pairs": pairs,
              "checkpoints": {name: artifact_identity(path) for name, path in checkpoints.items()}}

    def work() -> dict:
        report = evaluate_checkpoints(checkpoints, manifests, settings, scratch=directory.parent)
        compare_checkpoints(report, pairs)
        publish_report(config, directory, report, write_report(report, directory).values())
        return {"report": str(directory / "report.json")}

    run_stage("eval", directory, marker, work, fresh, root=config.run_path)
    return json.loads((directory / "report.json").read_text())
