"""The experiment suite: a thin Hydra shell around :mod:`flatness` (see DESIGN.md)."""
