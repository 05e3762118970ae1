"""Hydra callbacks that inject faults into a real multirun (used by test_multirun.py only)."""

import os
import signal

from hydra.experimental.callback import Callback


class InjectFaults(Callback):
    """Per job, by learning rate: ``kill_lr`` is SIGKILLed as it starts; ``broken_metric_lr`` gets a
    ``lambda_max`` that raises."""

    def __init__(self, kill_lr: float | None = None, broken_metric_lr: float | None = None):
        self.kill_lr, self.broken_metric_lr = kill_lr, broken_metric_lr

    def on_job_start(self, config, **kwargs) -> None:
        from flatness import registry

        if self.broken_metric_lr is not None and config.lr == self.broken_metric_lr:

            def broken(obj, *, tol=1e-4, bound="residual", max_iter=100, seed=0, subset=None,
                       precision="auto"):  # fmt: skip
                raise RuntimeError("injected metric failure")

            real = registry.REGISTRY["lambda_max"]
            registry.REGISTRY["lambda_max"] = registry.Metric(
                "lambda_max", broken, real.description, real.reference, real.limits
            )
        if self.kill_lr is not None and config.lr == self.kill_lr:
            os.kill(os.getpid(), signal.SIGKILL)
