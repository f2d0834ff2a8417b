"""Run by tests/examples/test_ssl_anneal.py: 3 SSL steps of a tiny model, sharded with FSDP 2 the way
`accelerate` prepares it (one unit per block, then the root) when started by `torchrun --nproc_per_node 2`
(gloo, CPU), or plainly in one process. Global batch 4 either way, in float64 (the claim is exactness: only
the order of the sums differs, see tests/numerics.py); writes the EMA target encoder's full state
(through `anneal.FullState`) before and after to argv[1]."""

import os
import sys

import torch
import torch.distributed as dist

from hf_vjepa_area import anneal, sources, ssl
from hf_vjepa_area.data import MultiBlockMaskCollator

sharded = "WORLD_SIZE" in os.environ
rank, world = 0, 1
if sharded:
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(0)
encoder = sources.build_demo_encoder(0, img_size=32, patch_size=8, num_frames=4, predictor_embed_dim=16,
                                     predictor_depth=1, predictor_num_heads=2, predictor_num_mask_tokens=1)
models = sources.load_ssl_models(encoder, init_predictor="random")
models = sources.SSLModels(*(m.double() for m in models))
model = ssl.JEPA(models.encoder, models.predictor)
target = models.target_encoder
if sharded:
    for block in [*models.encoder.blocks, *models.predictor.predictor_blocks]:
        fully_shard(block)
    fully_shard(model)
    anneal.shard_like(target, model)
optimizer = ssl.make_optimizer(model, 1e-2)
state = anneal.FullState(target)
initial = {k: v.clone() for k, v in state.state_dict().items()}  # on CPU the state aliases the live tensors

collator = MultiBlockMaskCollator((2, 4, 4), seed=0)
mine = slice(rank * 4 // world, (rank + 1) * 4 // world)
for step in range(3):
    clips = torch.randn(4, 3, 4, 32, 32, generator=torch.Generator().manual_seed(step), dtype=torch.float64)[mine]
    masks_context, masks_target = collator.masks(step, 4)
    loss, _ = model(clips, [m[mine] for m in masks_context], [m[mine] for m in masks_target], ssl.target_tokens(target, clips))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    ssl.ema_update(target, models.encoder, 0.9)

full = state.state_dict()
if sharded:  # the checkpoint round trip: full tensors in, each process keeps its shard
    saved = {k: v.clone() for k, v in full.items()}
    with torch.no_grad():
        for p in target.parameters():
            p.to_local().zero_()
    state.load_state_dict(saved)
    assert all(torch.equal(v, saved[k]) for k, v in state.state_dict().items())
if rank == 0:
    torch.save({"initial": initial, "trained": full}, sys.argv[1])
if sharded:
    dist.destroy_process_group()
