"""Process set-up shared by every stage: logging, threads, seeds and device."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

# The module's API (docs/api.md): what a user or a benchmark may import.
__all__ = ["seed_everything", "select_device", "gpus_of", "setup_logging", "autocast", "stage"]

log = logging.getLogger("scgenai_flow")


def setup_logging(log_file: str | Path | None = None) -> None:
    """Log to stderr and, when given, to the rule's log file."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    logging.captureWarnings(True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch so CPU runs repeat exactly."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def gpus_of(configured: int | str, scheduled: int) -> int | str:
    """GPUs a job uses: what the scheduler gave it (a profile's set-resources wins over the
    config), or `auto` when the config says auto and none was asked for."""
    return scheduled if scheduled or configured != "auto" else "auto"


def select_device(gpus: int | str, threads: int):  # -> torch.device
    """The device for `gpus` requested GPUs (`auto`: a GPU where torch sees one), logged; CPU
    (with a warning) when GPUs were requested and none is usable."""
    import torch

    torch.set_num_threads(max(1, threads))
    device = torch.device("cpu")
    if gpus == "auto" or gpus > 0:
        if torch.cuda.is_available():
            device = torch.device("cuda")
        elif gpus != "auto":
            log.warning(
                "%d GPU(s) requested (CUDA_VISIBLE_DEVICES=%s) but torch sees none: running on CPU",
                gpus,
                os.environ.get("CUDA_VISIBLE_DEVICES", "unset"),
            )
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{threads} CPU thread(s)"
    log.info("device: %s (%s; gpu: %s)", device, name, gpus)
    return device


def autocast(device) -> contextlib.AbstractContextManager:  # device: torch.device
    """bf16 autocast on CUDA (SDPA picks flash attention there); full precision on CPU."""
    import torch

    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def stage(log_file: str | Path | None) -> Iterator[None]:
    """Run one workflow stage: log to its file; a bad input ends it with a clear message."""
    from .io import InputError, OutputError

    setup_logging(log_file)
    try:
        yield
    except InputError as err:
        log.error("%s", err)
        if isinstance(err, OutputError):  # open HDF5 handles of the failed write crash at exit
            logging.shutdown()
            print(f"error: {err}", file=sys.stderr, flush=True)
            os._exit(1)
        sys.exit(f"error: {err}")
