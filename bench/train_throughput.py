"""Training throughput of our recipe against a hand-written HF Trainer + DeepSpeed baseline,
same model, same data, measured in one run.

    .venv/bin/python bench/train_throughput.py                 # ~1B Llama, seq 2048, one GPU
    .venv/bin/python bench/train_throughput.py --preset cpu    # small Llama, seq 256, ~1 min

Both variants train the same random-init Llama (saved once to a work directory) on the same
generated JSONL (lengths lognormal, median a quarter of the sequence length) with the same batch
size, learning rate, seed and number of epochs, under DeepSpeed ZeRO-2, one process each, one
after the other:
  (a) baseline: bench/train_baseline.py, rows padded to max length, the default attention;
  (b) recipe: `python -m ainfinity.train.finetune --deepspeed` with packing and
      attn_implementation "auto".
Tokens/s counts non-padding tokens: one epoch's worth, over the wall time of the last epoch
(from the clock at each step's log line, which both processes print), so the earlier epochs
are the warmup and packing cannot change what is counted. MFU = model FLOPs per token x
tokens/s / --peak-tflops, with FLOPs per token = 6 N + 12 L H Q T (PaLM, appendix B).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from train_workload import PRESETS, build_model, recipe_lengths, write_rows

ROOT = Path(__file__).resolve().parents[1]
H100_SXM_BF16_TFLOPS = 989.0


# `python -m ainfinity.train.finetune`, then peak GPU memory taken the way the baseline takes it.
RECIPE = (
    "import json, sys, torch\n"
    "from ainfinity.train.finetune import main\n"
    "code = main(sys.argv[1:])\n"
    "peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None\n"
    "print('bench-done ' + json.dumps({'peak_memory_bytes': peak}), flush=True)\n"
    "sys.exit(code)\n"
)


@dataclass
class Result:
    """One variant's figures over its measured (last) epoch."""

    variant: str
    tokens_per_second: float
    step_time_seconds: float
    steps_measured: int
    tokens_measured: int
    peak_memory_bytes: int
    peak_memory_kind: str  # "GPU allocated" (torch.cuda.max_memory_allocated) or "host RSS"
    tflops: float
    mfu: float | None  # None on CPU unless --peak-tflops is given
    # The trainer's own tokens_per_second over the same steps, where its records carry one.
    reported_tokens_per_second: float | None = None


def baseline_command(args: argparse.Namespace, work: Path, seq: int) -> list[str]:
    options = {
        "model": work / "model",
        "data": work / "rows.jsonl",
        "output-dir": work / "baseline-out",
        "seq": seq,
        "batch-size": args.batch_size,
        "epochs": args.epochs,
        "lr": args.lr,
        "seed": args.seed,
    }
    flags = [item for key, value in options.items() for item in (f"--{key}", str(value))]
    return [sys.executable, str(ROOT / "bench" / "train_baseline.py"), *flags]


def recipe_command(args: argparse.Namespace, work: Path, seq: int) -> list[str]:
    job = {
        "name": "bench-recipe",
        "model": str(work / "model"),
        "dataset": str(work / "rows.jsonl"),
        "output_dir": str(work / "recipe-out"),
        "hyperparameters": {
            "epochs": args.epochs,
            "learning_rate": args.lr,
            "batch_size": args.batch_size,  # packs per step: at most batch_size x seq tokens
            "max_seq_length": seq,
            "seed": args.seed,
            "logging_steps": 1,
            "packing": True,
            "attn_implementation": "auto",
            "save_steps": None,
        },
        "deepspeed": {"zero_stage": 2, "offload": False},
    }
    path = work / "job_config.json"
    path.write_text(json.dumps(job, indent=2))
    return [sys.executable, "-c", RECIPE, "--config", str(path), "--deepspeed"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(command: list[str], env: dict[str, str], log: Path) -> tuple[list[str], int, int]:
    """Run a child to the end; return its output lines, exit code and peak RSS in bytes."""
    lines: list[str] = []
    with log.open("w", encoding="utf-8") as sink:
        child = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert child.stdout is not None
        for line in child.stdout:
            sink.write(line)
            lines.append(line.rstrip("\n"))
        # wait4 rather than wait: it also gives this child's own peak RSS (KiB on Linux).
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    return lines, child.returncode, usage.ru_maxrss * 1024


def events(lines: list[str], prefix: str) -> list[dict[str, Any]]:
    return [json.loads(line.split(" ", 1)[1]) for line in lines if line.startswith(prefix + " ")]


def measure(
    variant: str,
    lines: list[str],
    step_prefix: str,
    tokens_per_epoch: int,
    args: argparse.Namespace,
    flops_per_token: float,
    rss: int,
) -> Result:
    """Figures over the last epoch, from the step records a child printed."""
    records = events(lines, step_prefix)
    clock = {}
    for record in records:
        moment = record["time"]  # the recipe writes ISO 8601, the baseline Unix seconds
        clock[record["step"]] = (
            datetime.fromisoformat(moment).timestamp() if isinstance(moment, str) else moment
        )
    total = records[-1]["total_steps"]
    if total % args.epochs or set(clock) != set(range(1, total + 1)):
        raise RuntimeError(f"{variant}: not one record per step of {total} ({args.epochs} epochs)")
    start = total - total // args.epochs  # the last step before the measured epoch
    seconds = clock[total] - clock[start]
    tokens_per_second = tokens_per_epoch / seconds

    peak_flops = args.peak_tflops * 1e12 if args.peak_tflops else None
    # Cross-check: the trainer's own count and clock over the same steps, where it reports them.
    reported = [r for r in records if r["step"] > start and "step_time_seconds" in r]
    reported_seconds = sum(r["step_time_seconds"] for r in reported)
    reported_tokens = sum(r["tokens_per_second"] * r["step_time_seconds"] for r in reported)
    done = events(lines, "bench-done")
    gpu_peak = done[-1]["peak_memory_bytes"] if done else None
    return Result(
        variant=variant,
        tokens_per_second=tokens_per_second,
        step_time_seconds=seconds / (total - start),
        steps_measured=total - start,
        tokens_measured=tokens_per_epoch,
        peak_memory_bytes=gpu_peak if gpu_peak is not None else rss,
        peak_memory_kind="GPU allocated" if gpu_peak is not None else "host RSS",
        tflops=flops_per_token * tokens_per_second / 1e12,
        mfu=flops_per_token * tokens_per_second / peak_flops if peak_flops else None,
        reported_tokens_per_second=reported_tokens / reported_seconds
        if len(reported) == total - start
        else None,
    )


def table(results: list[Result]) -> str:
    lines = [
        "| variant | tokens/s | step time (s) | steps measured | peak memory | TFLOP/s | MFU |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        memory = f"{r.peak_memory_bytes / 2**30:.2f} GiB {r.peak_memory_kind}"
        mfu = f"{r.mfu:.1%}" if r.mfu is not None else "n/a"
        lines.append(
            f"| {r.variant} | {r.tokens_per_second:,.0f} | {r.step_time_seconds:.3f} "
            f"| {r.steps_measured} | {memory} | {r.tflops:.3f} | {mfu} |"
        )
    return "\n".join(lines)


def benchmark(args: argparse.Namespace, work: Path, device: str) -> int:
    preset = PRESETS[args.preset]
    seq = args.seq or preset.seq
    sizes = build_model(work / "model", preset.shape, seq, args.seed)
    write_rows(work / "rows.jsonl", args.rows or preset.rows, seq, args.seed)
    lengths = recipe_lengths(work / "model", work / "rows.jsonl", seq)
    # PaLM's T is the context each token attends over: here its own row, neither the padded
    # length nor the pack. Averaged over tokens, that is sum(len^2) / sum(len).
    context = sum(n * n for n in lengths) / sum(lengths)
    attention = 12 * sizes["layers"] * sizes["attention_width"] * context
    flops_per_token = 6 * sizes["matmul_parameters"] + attention
    print(
        f"preset {args.preset} on {device}: {sizes['parameters'] / 1e6:.1f}M parameters, "
        f"seq {seq}, batch {args.batch_size}, {len(lengths)} rows, "
        f"{sum(lengths):,} tokens per epoch, {args.epochs} epochs (the last one measured), "
        f"work dir {work}",
        flush=True,
    )

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if device == "cpu":
        env |= {"OMP_NUM_THREADS": str(args.threads), "DS_ACCELERATOR": "cpu"}
    # One rank without a launcher (the recipe's --deepspeed sets these itself).
    single_rank = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"}
    single_rank |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    results = []
    for variant, command, child_env, step_prefix in (
        ("(a) baseline", baseline_command(args, work, seq), env | single_rank, "bench-step"),
        ("(b) recipe", recipe_command(args, work, seq), env, "ainfinity-metric"),
    ):
        log = work / f"{variant[1]}.log"
        lines, code, rss = run(command, child_env, log)
        if code != 0:
            print("\n".join(lines[-30:]), file=sys.stderr)
            print(f"{variant} failed with exit status {code}; log: {log}", file=sys.stderr)
            return 1
        # Each variant's own non-padding tokens (the baseline's tokenizer call adds no bos/eos).
        own = events(lines, "bench-data")
        tokens = own[-1]["tokens_per_epoch"] if own else sum(lengths)
        results.append(measure(variant, lines, step_prefix, tokens, args, flops_per_token, rss))

    baseline, recipe = results
    ratio = recipe.tokens_per_second / baseline.tokens_per_second
    print(f"\n{table(results)}\n\ntokens/s ratio (b)/(a): {ratio:.2f}x")
    if recipe.steps_measured == baseline.steps_measured:
        print("note: (b) ran as many steps per epoch as (a): its batches were not packed")
    if recipe.reported_tokens_per_second is not None:
        print(f"(b) per its own metric records: {recipe.reported_tokens_per_second:,.0f} tokens/s")
    peak = f"{args.peak_tflops:g} TFLOP/s" if args.peak_tflops else "no peak given (n/a)"
    print(
        f"model FLOPs per token: {flops_per_token:.4g} = 6 N + 12 L H Q T with N = "
        f"{sizes['matmul_parameters']:,}, L = {sizes['layers']}, H Q = "
        f"{sizes['attention_width']}, T = {context:.0f}; MFU against {peak}"
    )
    if recipe.mfu is not None and device != "cpu":
        verdict = "met" if recipe.mfu >= 0.5 and ratio >= 1.5 else "NOT met"
        print(f"targets (recipe MFU >= 50 %, tokens/s >= 1.5x baseline): {verdict}")
    if args.json:
        summary = {
            "preset": args.preset,
            "device": device,
            "seq": seq,
            "batch_size": args.batch_size,
            "rows": len(lengths),
            "epochs": args.epochs,
            "flops_per_token": flops_per_token,
            "peak_tflops": args.peak_tflops,
            "ratio_tokens_per_second": ratio,
            "results": [asdict(r) for r in results],
        }
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--preset",
        choices=["auto", *PRESETS],
        default="auto",
        help="auto: gpu when CUDA is available, else cpu",
    )
    parser.add_argument("--rows", type=int, help="dataset rows (default: the preset's)")
    parser.add_argument("--seq", type=int, help="max sequence length (default: the preset's)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2, help="the last one is measured")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--peak-tflops",
        type=float,
        help=f"the device's dense bf16 peak for MFU (default on CUDA: H100 SXM, "
        f"{H100_SXM_BF16_TFLOPS:g}; on CPU: none, MFU n/a)",
    )
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS on CPU")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--keep", type=Path, help="work here (model, data, logs) and keep it")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the epochs before the last are the warmup")

    import torch

    on_gpu = torch.cuda.is_available()
    device = torch.cuda.get_device_name() if on_gpu else "cpu"
    if args.preset == "auto":
        args.preset = "gpu" if on_gpu else "cpu"
    if args.peak_tflops is None and on_gpu:
        args.peak_tflops = H100_SXM_BF16_TFLOPS
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        return benchmark(args, args.keep, device)
    with tempfile.TemporaryDirectory(prefix="ainfinity-bench-") as work:
        return benchmark(args, Path(work), device)


if __name__ == "__main__":
    sys.exit(main())
