"""Run by tests/test_probing.py under torchrun: a 3-head probe trained with `probing.train_one_epoch` on fixed
features, sharded over the processes; saves the parameters and how many gradient reductions DDP ran."""

import sys

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs

from hf_vjepa_area import probing
from hf_vjepa_area.data import GlobalBatchSampler

accelerator = Accelerator(cpu=True, kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True, gradient_as_bucket_view=True)])
torch.manual_seed(0)
probe = probing.MultiHeadProbe(24, 3, probing.hparam_grid([0.01, 0.003, 0.001], [0.1]), num_heads=4, depth=2)
optimizer = torch.optim.SGD(probe.parameters(), lr=0.5, momentum=0.9)
scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, probing.WarmupCosine(3))
probe, optimizer = accelerator.prepare(probe, optimizer)
reductions = [0]
if accelerator.num_processes > 1:
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    def counting_hook(state, bucket):
        reductions[0] += 1
        return allreduce_hook(state, bucket)

    probe.register_comm_hook(None, counting_hook)

gen = torch.Generator().manual_seed(1)
features, labels = torch.randn(12, 1, 10, 24, generator=gen), torch.randint(0, 3, (12,), generator=gen)
sampler = GlobalBatchSampler(12, 2 // accelerator.num_processes, rank=accelerator.process_index,
                             num_replicas=accelerator.num_processes)  # fmt: skip
batches = [{"features": features[i], "labels": labels[i], "indices": torch.tensor(i), "skipped_samples": [],
            "skipped_paths": []} for i in sampler]  # fmt: skip
probing.train_one_epoch(accelerator, probe, optimizer, scheduler, batches, lambda b: b["features"],
                        empty_tokens_shape=(1, 10, 24), grad_accum=2)  # fmt: skip
if accelerator.is_main_process:
    params = [p.detach().clone() for p in accelerator.unwrap_model(probe).parameters()]
    torch.save({"params": params, "reductions": reductions[0], "optimizer_steps": 3}, sys.argv[1])
