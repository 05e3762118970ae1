"""The experiment suite: a thin Hydra shell around :mod:`flatness` (see DESIGN.md)."""

from omegaconf import OmegaConf

from experiments import schema  # noqa: F401  registers the run schema in Hydra's ConfigStore

# ${mul:a,b} in configs, e.g. a learning-rate grid as multiples of each optimizer's default.
if not OmegaConf.has_resolver("mul"):
    OmegaConf.register_new_resolver("mul", lambda a, b: float(a) * float(b))
