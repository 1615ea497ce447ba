"""A short GPU run for machines that have one: train some hundred steps and predict on the embedded
data at two batch sizes, printing windows/s, tokens/s, MFU and peak GPU memory (`make gpu-check`)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]


def build_windows(workdir: Path, max_length: int) -> Path:
    """Windows of the embedded data's splits, made by the workflow itself (CPU stages)."""
    overrides = workdir / "gpu_check.yaml"
    overrides.write_text(json.dumps({"context": {"max_length": max_length}}))
    targets = [f"results/contexts/{split}.npz" for split in ("train", "predict")]
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
               "--cores", "4", *targets, "--configfile", str(REPO / "config/config.yaml"),
               str(overrides)]  # fmt: skip
    subprocess.run(command, check=True)
    return workdir / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path("benchmarks/out/gpu_check"))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--backbone", default="llama")
    parser.add_argument("--size", default="small")
    args = parser.parse_args()

    from scgenai_flow.config import with_defaults
    from scgenai_flow.contexts import load_windows
    from scgenai_flow.models import count_parameters
    from scgenai_flow.runtime import seed_everything
    from scgenai_flow.train import LabelledWindows, new_model, peak_flops
    from scgenai_flow.vocab import Vocabulary

    args.workdir.mkdir(parents=True, exist_ok=True)
    results = build_windows(args.workdir, args.max_length)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    peak, source = peak_flops(device)
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU (no GPU seen)'};"
          f" MFU against {peak:.3g} FLOP/s ({source})")  # fmt: skip
    seed_everything(0)
    vocab = Vocabulary.load(results / "vocab")
    train = LabelledWindows(*load_windows(results / "contexts/train.npz", mapped=True))
    predict, _ = load_windows(results / "contexts/predict.npz", mapped=True)
    # the default config's model settings (pooling, pair input), with this backbone and size
    defaults = with_defaults(yaml.safe_load((REPO / "config/config.yaml").read_text()) or {})["model"]
    model_config = {"model": {**defaults, "backbone": args.backbone, "size": args.size}}
    for batch_size in args.batch_sizes:
        model = new_model(model_config, vocab, args.max_length).to(device)
        print(f"model: {args.backbone}/{args.size}, {count_parameters(model):,} parameters,"
              f" {args.max_length} tokens, {model.spec.pair_input} pairs; batch {batch_size}")  # fmt: skip
        print(train_speed(model, train, batch_size, args.steps, device))
        print(predict_speed(model, predict, batch_size, device, peak))
        if device.type == "cuda":
            print(f"  peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
            torch.cuda.reset_peak_memory_stats()
        del model


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_speed(model, train, batch_size: int, steps: int, device: torch.device) -> str:
    """`steps` optimiser steps on seeded random batches (after 5 warm-up steps): windows/s,
    tokens/s, padding and MFU."""
    from scgenai_flow.predict import batch_tensors
    from scgenai_flow.runtime import autocast
    from scgenai_flow.train import BatchCounts, throughput

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    labels = torch.from_numpy(train.window_labels.astype(np.int64))
    rng = np.random.default_rng(0)
    model.train()

    def step(counts: BatchCounts) -> None:
        idx = np.sort(rng.choice(len(train.windows), batch_size, replace=False))
        ids, lengths = batch_tensors(train.windows, idx, device)
        counts.add(ids, lengths)
        with autocast(device):
            logits = model(ids, lengths)
        loss = torch.nn.functional.cross_entropy(logits.float(), labels[idx].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(5):  # warm-up: kernels, allocator
        step(BatchCounts())
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    counts, started = BatchCounts(), time.perf_counter()
    for _ in range(steps):
        step(counts)
    synchronize(device)
    speed = throughput(counts, time.perf_counter() - started, model, device)
    return (f"  train: {steps} steps, {speed['Windows/s']:,.0f} windows/s, {speed['Tokens/s']:,.0f} tokens/s,"
            f" padding {speed['Padding']:.1%}, MFU {speed['MFU']:.1%}")  # fmt: skip


def predict_speed(model, windows, batch_size: int, device: torch.device, peak: float) -> str:
    """Class probabilities of every predict window: windows/s, tokens/s and MFU (the forward
    pass: a third of a training step's FLOPs)."""
    from scgenai_flow.predict import window_probabilities
    from scgenai_flow.train import flops_per_token

    started = time.perf_counter()
    window_probabilities(model, windows, batch_size, device)
    synchronize(device)
    seconds = time.perf_counter() - started
    tokens = int(windows.lengths.sum())
    mfu = flops_per_token(model, tokens / len(windows)) / 3 * tokens / seconds / peak
    return (f"  predict: {len(windows):,} windows, {len(windows) / seconds:,.0f} windows/s,"
            f" {tokens / seconds:,.0f} tokens/s, MFU {mfu:.1%}")  # fmt: skip


if __name__ == "__main__":
    main()
