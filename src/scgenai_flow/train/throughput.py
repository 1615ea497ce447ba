"""How fast an epoch trained: windows and tokens per second, the share of padding in its batches,
and the model FLOPs utilisation (MFU) against the device's peak."""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cache

import torch
from torch import nn

from ..models import member_networks
from .settings import THROUGHPUT_COLUMNS

# Dense bf16 tensor-core peaks (FLOP/s, no sparsity) of GPUs by name; others are measured.
GPU_BF16_PEAK = {
    "H200": 989e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10G": 70e12,
    "A10": 125e12,
    "V100": 125e12,  # fp16: V100 has no bf16
    "RTX 4090": 165e12,
}


@dataclass
class BatchCounts:
    """What an epoch's batches held: windows, real tokens and padded positions."""

    windows: int = 0
    tokens: int = 0
    positions: int = 0  # tokens + padding

    def add(self, ids: torch.Tensor, lengths: torch.Tensor) -> None:
        self.windows += int(ids.shape[0])
        self.tokens += int(lengths.sum())
        self.positions += int(ids.numel())


def flops_per_token(model: nn.Module, length: float) -> float:
    """Training FLOPs per token (forward and backward): per position the backbone sees, 6 x the
    non-embedding parameters plus attention's 12 x layers x width x positions (`length`, the
    mean tokens per window); with summed pairs a position holds two tokens."""
    total = 0.0
    for network in member_networks(model):
        embedding = network.backbone.get_input_embeddings().weight.numel()
        dense = sum(p.numel() for p in network.parameters()) - embedding
        dims = network.spec.dims
        tokens_per_position = 2 if network.spec.pair_input == "summed" else 1
        positions = length / tokens_per_position
        total += (6 * dense + 12 * dims.layers * dims.hidden * positions) / tokens_per_position
    return total


@cache
def peak_flops(device: torch.device) -> tuple[float, str]:
    """The device's peak FLOP/s and where it comes from: the bf16 table for known GPUs, else a
    measured matmul (bf16 on a GPU, float32 on the CPU with torch's threads)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peak in GPU_BF16_PEAK.items():
            if key in name:
                return peak, f"{name} bf16 peak"
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    size = 4096 if device.type == "cuda" else 1024
    # constant values: drawing them would move the global random stream that training seeds
    a = torch.full((size, size), 1.0 / size, device=device, dtype=dtype)
    a @ a  # warm-up
    best = float("inf")
    for _ in range(5):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        a @ a
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best, f"measured {str(dtype).removeprefix('torch.')} matmul on {device.type}"


def throughput(
    counts: BatchCounts, seconds: float, model: nn.Module, device: torch.device
) -> dict[str, float]:
    """An epoch's THROUGHPUT_COLUMNS: windows/s, tokens/s, padding share and MFU."""
    seconds = max(seconds, 1e-9)
    length = counts.tokens / max(counts.windows, 1)
    achieved = flops_per_token(model, length) * counts.tokens / seconds
    values = (
        counts.windows / seconds,
        counts.tokens / seconds,
        1 - counts.tokens / max(counts.positions, 1),
        achieved / peak_flops(device)[0],
    )
    return dict(zip(THROUGHPUT_COLUMNS, values))
