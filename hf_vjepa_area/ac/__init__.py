"""V-JEPA 2-AC: the action-conditioned world model (`WorldModel`, `load_world_model`), planning with the
cross-entropy method (`plan_actions`, `cem`, `CEMConfig`) and post-training (`posttrain`)."""

from .planning import CEMConfig, cem, plan_actions, rollout_energy
from .world_model import WorldModel, load_world_model, next_state, normalize

__all__ = ["WorldModel", "load_world_model", "next_state", "normalize", "CEMConfig", "cem", "plan_actions", "rollout_energy"]
