"""Training and evaluation: per-item seeded augmentation, forward + backward one
head at a time with one gradient reduction per optimizer step, and per-sample records."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.utils.data import Dataset

from ..data import item_seed
from .heads import per_sample_loss
from .metrics import add_records, new_records, stack_records


class SeededSamples(Dataset):
    """Wraps a dataset so item i of epoch e draws its randomness from torch's RNG seeded by
    `item_seed(seed, e, i)` (the pretraining clips' seed, for datasets that draw from the global RNG).

    Training augmentation (random clip offsets, crops) then depends on neither the number of
    processes, the DataLoader workers, nor where a run was resumed, so a 2-process run sees the same
    clips as a 1-process run and a resumed run the same as an uninterrupted one. Call `set_epoch`.
    """

    def __init__(self, dataset: Dataset, seed: int = 0):
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed(self.seed, self.epoch, index))
            return self.dataset[index]


def _check_per_head_ddp(probe: nn.Module) -> None:
    if isinstance(probe, nn.parallel.DistributedDataParallel) and not probe.find_unused_parameters:
        raise ValueError(
            "each probe head runs forward + backward on its own, so the other heads are unused in that pass: "
            "wrap the probe with find_unused_parameters=True (accelerate: "
            "Accelerator(kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)]))"
        )


def backward_per_head(accelerator, probe: nn.Module, tokens: torch.Tensor, labels: torch.Tensor, *,
                      loss_scale: float, sync: bool) -> torch.Tensor:  # fmt: skip
    """Forward + backward of each head in turn on the same frozen tokens; returns detached logits
    `[H, B, V, K]`.

    The heads share nothing but `tokens` (no grad), so the gradients equal one backward of the summed
    losses, while only one head's graph is alive at a time. Gradients accumulate locally (`no_sync`)
    except in the last head's backward when `sync`: DDP then reduces every head's gradient once, in one
    pass over its buckets (heads unused in that pass keep the gradients they accumulated).
    """
    heads = len(accelerator.unwrap_model(probe).heads)
    tokens = tokens.detach()
    logits = []
    for head in range(heads):
        reduce_now = sync and head == heads - 1
        with contextlib.nullcontext() if reduce_now else accelerator.no_sync(probe):
            out = probe(tokens, head=head)
            accelerator.backward(per_sample_loss(out[None], labels)[0].sum() * loss_scale)
        logits.append(out.detach())
    return torch.stack(logits)


def train_one_epoch(
    accelerator,
    probe: nn.Module,
    optimizer,
    scheduler,
    loader: Iterable[dict],
    tokens_of: Callable[[dict], torch.Tensor | None],
    *,
    empty_tokens_shape: tuple[int, int, int],
    grad_accum: int = 1,
    progress: bool = False,
    desc: str = "train",
) -> tuple[dict[str, torch.Tensor], list]:
    """One pass over `loader` (every process the same number of batches, see `data.GlobalBatchSampler`).

    The gradient of each optimizer step is the exact mean over the samples the step used on all
    processes: each process back-propagates `world * sum of its per-sample losses` (DDP averages over
    processes, which makes it the global sum), and the summed gradients are divided by the step's
    global sample count before `optimizer.step()`. Skipped videos and short last batches are thus
    weighted right, and `grad_accum` micro-batches weigh like one big batch. A process whose batch is
    empty runs the heads on zeros with a zero loss so DDP's collectives still match. Heads train one at
    a time (`backward_per_head`); gradients are reduced once per optimizer step.

    Returns this process's per-sample records (`new_records` layout) and its skipped videos (the batches'
    `skipped_samples`, `data.SkippedSample`s).
    """
    from tqdm import tqdm  # not tqdm.auto: its asyncio class calls iter() in __init__, a second DataLoader iterator (twice the workers)

    _check_per_head_ddp(probe)
    device, world = accelerator.device, accelerator.num_processes
    probe.train()
    records, skipped = new_records(), []
    window = 0
    num_batches = len(loader)
    for step, batch in enumerate(tqdm(loader, desc=desc, disable=not progress)):
        skipped += batch["skipped_samples"]
        tokens = tokens_of(batch)
        labels = batch["labels"].to(device)
        last = (step + 1) % grad_accum == 0 or step + 1 == num_batches
        if tokens is None:
            backward_per_head(accelerator, probe, torch.zeros(1, *empty_tokens_shape, device=device),
                              torch.zeros(1, dtype=torch.long, device=device), loss_scale=0.0, sync=last)  # fmt: skip
        else:
            logits = backward_per_head(accelerator, probe, tokens, labels, loss_scale=float(world), sync=last)
            window += len(labels)
            add_records(records, batch["indices"], labels, logits)
        del tokens
        if last:
            count = int(accelerator.reduce(torch.tensor(window, device=device), "sum").item())
            for param in probe.parameters():
                if param.grad is not None:
                    param.grad.div_(max(count, 1))
            optimizer.step()
            if not accelerator.optimizer_step_was_skipped:
                scheduler.step()
            # Zeroed in place, not freed: under DDP with gradient_as_bucket_view the gradients are views of the
            # reduction buckets, so the heads' backward passes accumulate into them without a second copy.
            optimizer.zero_grad(set_to_none=False)
            window = 0
    return stack_records(records, len(accelerator.unwrap_model(probe).heads)), skipped


@torch.no_grad()
def evaluate(
    accelerator,
    probe: nn.Module,
    loader: Iterable[dict],
    tokens_of: Callable[[dict], torch.Tensor | None],
    *,
    progress: bool = False,
    desc: str = "val",
) -> tuple[dict[str, torch.Tensor], list]:
    """Per-sample predictions (softmax averaged over views) and losses of every head on this process's
    share of `loader`; returns the records and the skipped videos (`data.SkippedSample`s)."""
    from tqdm import tqdm  # not tqdm.auto: its asyncio class calls iter() in __init__, a second DataLoader iterator (twice the workers)

    model = accelerator.unwrap_model(probe).eval()
    records, skipped = new_records(), []
    for batch in tqdm(loader, desc=desc, disable=not progress):
        skipped += batch["skipped_samples"]
        tokens = tokens_of(batch)
        if tokens is None:
            continue
        with accelerator.autocast():
            logits = model(tokens)
        add_records(records, batch["indices"], batch["labels"], logits)
    return stack_records(records, len(model.heads)), skipped


