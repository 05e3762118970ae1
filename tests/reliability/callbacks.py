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
        from flatness import metrics

        if self.broken_metric_lr is not None and config.lr == self.broken_metric_lr:

            def broken(ctx, **settings):
                raise RuntimeError("injected metric failure")

            real = metrics.REGISTRY["lambda_max"]
            metrics.REGISTRY["lambda_max"] = metrics.Metric(
                "lambda_max", broken, real.defaults, real.description
            )
        if self.kill_lr is not None and config.lr == self.kill_lr:
            os.kill(os.getpid(), signal.SIGKILL)
