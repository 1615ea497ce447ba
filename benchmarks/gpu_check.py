"""A short GPU run for machines that have one: train some hundred steps and predict on the embedded
data, printing windows/s, tokens/s and peak GPU memory (`make gpu-check`)."""

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
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--backbone", default="llama")
    parser.add_argument("--size", default="small")
    args = parser.parse_args()

    from scgenai_flow.contexts import load_windows
    from scgenai_flow.predict import batch_tensors, window_probabilities
    from scgenai_flow.runtime import autocast, seed_everything
    from scgenai_flow.train import LabelledWindows
    from scgenai_flow.vocab import Vocabulary

    args.workdir.mkdir(parents=True, exist_ok=True)
    results = build_windows(args.workdir, args.max_length)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU (no GPU seen)'}")
    seed_everything(0)
    vocab = Vocabulary.load(results / "vocab")
    train = LabelledWindows(*load_windows(results / "contexts/train.npz"))
    predict, _ = load_windows(results / "contexts/predict.npz")

    from scgenai_flow.config import with_defaults
    from scgenai_flow.models import count_parameters
    from scgenai_flow.train import new_model

    # the default config's model settings (pooling, pair input), with this backbone and size
    defaults = with_defaults(yaml.safe_load((REPO / "config/config.yaml").read_text()) or {})["model"]
    model_config = {"model": {**defaults, "backbone": args.backbone, "size": args.size}}
    model = new_model(model_config, vocab, args.max_length).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    labels = torch.from_numpy(train.window_labels.astype(np.int64))
    rng = np.random.default_rng(0)
    parameters = count_parameters(model)
    print(f"model: {args.backbone}/{args.size}, {parameters:,} parameters, {args.max_length} tokens,"
          f" {model.spec.pair_input} gene-bin pairs")  # fmt: skip

    def step(idx: np.ndarray) -> int:
        ids, lengths = batch_tensors(train.windows, idx, device)
        with autocast(device):
            logits = model(ids, lengths)
        loss = torch.nn.functional.cross_entropy(logits.float(), labels[idx].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return int(lengths.sum())

    model.train()
    for _ in range(5):  # warm-up: kernels, allocator
        step(rng.choice(len(train.windows), args.batch_size))
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started, tokens = time.perf_counter(), 0
    for _ in range(args.steps):
        tokens += step(rng.choice(len(train.windows), args.batch_size))
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    windows = args.steps * args.batch_size
    print(f"train: {args.steps} steps, {windows / seconds:,.0f} windows/s, {tokens / seconds:,.0f} tokens/s")

    started = time.perf_counter()
    window_probabilities(model, predict, 256, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    print(f"predict: {len(predict)} windows, {len(predict) / seconds:,.0f} windows/s, "
          f"{int(predict.lengths.sum()) / seconds:,.0f} tokens/s")  # fmt: skip
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
