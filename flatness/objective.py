"""The training loss as a function of the parameters: value, gradient and Hessian-vector products.

Every measure of the catalogue takes an :class:`Objective` and its settings. The objective is exact
over the whole dataset (batches are summed through :func:`flatness.evaluate.accumulate`), runs the
model in eval mode through ``torch.func.functional_call`` and never changes it. Hessian-vector
products cache the gradient's graph, batch by batch, whenever the graphs fit in memory (PyHessian's
way, Yao et al. 2020): one backward pass per product instead of a forward and two backward passes.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from flatness import distributed
from flatness import params as P
from flatness.data import Data, DataLike, as_data
from flatness.evaluate import Evaluation, LossFn, accumulate, eval_mode, evaluate

HVP_MODES = ("auto", "cached-graph", "forward-over-reverse", "reverse-over-reverse")


class Objective:
    """The mean loss of ``model`` over ``data`` as a function of its trainable parameters.

    ``data`` is ``(x, y)`` tensors or a loader of ``(x, y)`` batches; tensors are cut into batches of
    ``batch_size``. ``names`` restricts the parameters that vary (default: all trainable ones); no
    weight-decay term is included. ``graph_memory`` caps the bytes that cached gradient graphs may
    take (default: half the free accelerator memory, or a quarter of the available RAM).
    """

    def __init__(
        self,
        model: nn.Module,
        data: DataLike,
        loss_fn: LossFn = F.cross_entropy,
        *,
        batch_size: int = 2048,
        names: list[str] | None = None,
        graph_memory: int | None = None,
    ):
        self.model, self.data, self.loss_fn = model, as_data(data), loss_fn
        self.batch_size = batch_size
        all_params = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
        if not all_params:
            raise ValueError("the model has no trainable parameter")
        self.names = list(all_params) if names is None else list(names)
        self.params = {k: all_params[k] for k in self.names}
        self.frozen = {k: v for k, v in all_params.items() if k not in self.params}
        # A copy: the model's own buffers may be restored in place later (after a measurement), which
        # would invalidate a cached graph that saw them.
        self.buffers = {k: b.detach().clone() for k, b in model.named_buffers()}
        self.n = len(self.data)
        self.dim = sum(p.numel() for p in self.params.values())
        self.hvp_count = 0
        self.hvp_mode: str | None = None  # the path the last product took
        self.graph_memory = graph_memory
        self._graph = None  # (leaves, [(name, gradient with graph)]) for the cached path
        self._cache: bool | None = None  # whether auto caches graphs: decided once, on first use
        self._evaluation: Evaluation | None = None
        self._subsets: dict[int, Objective] = {}

    # --- the objective on part of the data, and plain evaluation ---------------------------------

    def subset(self, n: int | None) -> Objective:
        """The same objective on the first ``n`` samples (itself for None); cached per ``n``."""
        if n is None or n >= self.n:
            return self
        if n not in self._subsets:
            self._subsets[n] = Objective(
                self.model,
                self.data.head(n),
                self.loss_fn,
                batch_size=self.batch_size,
                names=self.names,
                graph_memory=self.graph_memory,
            )
        return self._subsets[n]

    def evaluation(self) -> Evaluation:
        """Loss and accuracy of the model's own weights on the data (computed once)."""
        if self._evaluation is None:
            self._evaluation = evaluate(
                self.model, self.data, self.loss_fn, batch_size=self.batch_size
            )
        return self._evaluation

    # --- value, gradient -------------------------------------------------------------------------

    def _batch_loss(self, params: Mapping[str, torch.Tensor], xb, yb) -> torch.Tensor:
        out = functional_call(self.model, ({**self.frozen, **params}, self.buffers), (xb,))
        return self.loss_fn(out, yb)

    def _sum(self, per_batch, detach: bool = True):
        with eval_mode(self.model):
            total, self.batch_size = accumulate(
                self.data, per_batch, self.batch_size, detach=detach, on_retry=self._drop_graph
            )
        return total

    def value(self, params: Mapping[str, torch.Tensor] | None = None) -> float:
        """The mean loss at ``params`` (default: the model's own)."""
        params = self.params if params is None else params
        with torch.no_grad():
            return self._sum(lambda xb, yb: self._batch_loss(params, xb, yb).double()).item()

    def value_and_grad(
        self, params: Mapping[str, torch.Tensor] | None = None
    ) -> tuple[float, dict[str, torch.Tensor]]:
        """The mean loss and its gradient with respect to the varying parameters."""
        params = dict(self.params if params is None else params)
        grad_fn = torch.func.grad_and_value(self._batch_loss)
        grads, value = self._sum(lambda xb, yb: grad_fn(params, xb, yb))
        return value.item(), grads

    # --- Hessian-vector products -----------------------------------------------------------------

    def hvp(
        self,
        v: Mapping[str, torch.Tensor],
        params: Mapping[str, torch.Tensor] | None = None,
        mode: str = "auto",
    ) -> dict[str, torch.Tensor]:
        """H v, the Hessian of the mean loss times ``v`` (a dict shaped like the parameters).

        ``cached-graph`` (at the model's own weights) builds each batch's gradient graph once and
        differentiates it again for every product (measured 2× faster than recomputing on the
        default MLP). ``forward-over-reverse`` is a ``jvp`` of the gradient; ``reverse-over-reverse``
        a gradient of ⟨∇L, v⟩ (double backward). ``auto`` caches when the graphs fit in memory, else
        takes forward-over-reverse, and falls back to double backward for good the first time an
        operator lacks a forward-mode derivative (``F.mse_loss`` in torch 2.14 does).
        ``self.hvp_mode`` records which path ran.
        """
        if mode not in HVP_MODES:
            raise ValueError(f"mode must be one of {list(HVP_MODES)} (got {mode!r})")
        if mode == "auto":
            if params is None and self._cache is None:  # the estimate runs a forward pass:
                self._cache = self.graph_fits()  # decide once, not once per product
            if params is None and self._cache:
                try:
                    return self.hvp(v, mode="cached-graph")
                except torch.OutOfMemoryError:  # the estimate was wrong: stop caching
                    self._drop_graph()
                    self._cache = False
            mode = "reverse-over-reverse" if self.hvp_mode == "reverse-over-reverse" else None
            if mode is None:
                try:
                    return self.hvp(v, params, mode="forward-over-reverse")
                except (RuntimeError, NotImplementedError):
                    mode = "reverse-over-reverse"
            return self.hvp(v, params, mode=mode)
        v = {k: v[k] for k in self.names}
        if mode == "cached-graph":
            if params is not None:
                raise ValueError("mode='cached-graph' works at the model's own weights only")
            out = self._cached_graph_hvp(v)
        else:
            out = self._sum(
                self._hvp_per_batch(v, dict(self.params if params is None else params), mode)
            )
        self.hvp_count += 1
        self.hvp_mode = mode
        return out

    def _hvp_per_batch(self, v, params, mode):
        if mode == "forward-over-reverse":
            grad_fn = torch.func.grad(self._batch_loss)
            return lambda xb, yb: jvp(lambda p: grad_fn(p, xb, yb), (params,), (v,))[1]

        def per_batch(xb, yb):
            def inner(p):
                g = torch.func.grad(self._batch_loss)(p, xb, yb)
                return sum((g[k] * v[k]).sum() for k in g)

            return torch.func.grad(inner)(params)

        return per_batch

    def graph_bytes(self) -> int:
        """An estimate of the memory that the cached gradient graphs of the whole dataset take: the
        activations of every sample (measured with forward hooks on one sample) kept about three
        times over by a double-backward graph, plus one gradient per batch."""
        sizes: list[int] = []
        hooks = [
            m.register_forward_hook(lambda _m, _i, out: sizes.append(out.numel()))
            for m in self.model.modules()
            if not list(m.children())
        ]
        try:
            xb, _ = next(iter(self.data.batches(1)))
            with torch.no_grad(), eval_mode(self.model):
                functional_call(
                    self.model, ({**self.frozen, **self.params}, self.buffers), (xb[:1],)
                )
        finally:
            for h in hooks:
                h.remove()
        element = next(iter(self.params.values())).element_size()
        per_sample = 3 * (sum(sizes) + math.prod(xb.shape[1:])) * element
        n_batches = math.ceil(self.n / self.batch_size) if self.data.is_tensors else 1
        return per_sample * self.n + 2 * n_batches * self.dim * element

    def graph_fits(self) -> bool:
        """Whether the cached graphs fit in the memory allowed for them."""
        return self.graph_bytes() <= self._graph_budget()

    def _graph_budget(self) -> int:
        if self.graph_memory is not None:
            return self.graph_memory
        device = next(iter(self.params.values())).device
        if device.type == "cuda":
            return int(0.5 * torch.cuda.mem_get_info(device)[0])
        try:
            return int(0.25 * os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return 1 << 30

    def _drop_graph(self) -> None:
        self._graph = None

    def _cached_graph_hvp(self, v: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self._graph is None:
            leaves = {k: p.clone().requires_grad_(True) for k, p in self.params.items()}
            with torch.enable_grad():
                # One graph for the weighted sum of the batch gradients: each product is then a
                # single backward pass through every batch's graph.
                grads = self._sum(
                    lambda xb, yb: _grad_with_graph(self._batch_loss(leaves, xb, yb), leaves),
                    detach=False,
                )
            used = [(k, g) for k, g in grads.items() if g.requires_grad]
            self._graph = (leaves, used)
        leaves, used = self._graph
        parts = [None] * len(leaves)
        if used:
            parts = torch.autograd.grad(
                [g for _, g in used],
                list(leaves.values()),
                grad_outputs=[v[k] for k, _ in used],
                retain_graph=True,
                allow_unused=True,
            )
        # A parameter the gradient does not depend on has a zero row in the Hessian (zeros made
        # only for those: a copy of every parameter per product cost ~0.1 s on ResNet-18).
        out = {
            k: torch.zeros_like(p) if t is None else t.detach()
            for (k, p), t in zip(leaves.items(), parts, strict=True)
        }
        return distributed.combine(out, self.n, mean=True)  # sharded data: the whole data's H v

    def flat_hvp(self, vector: torch.Tensor, mode: str = "auto") -> torch.Tensor:
        """:meth:`hvp` on flat vectors (any float dtype in, the same dtype out)."""
        like = self.params
        first = next(iter(like.values()))
        v = P.unflatten(vector.to(device=first.device, dtype=first.dtype), like)
        out = torch.cat([t.reshape(-1) for t in self.hvp(v, mode=mode).values()])
        return out.to(device=vector.device, dtype=vector.dtype)

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device


def jvp(fn, primals, tangents):
    """``torch.func.jvp`` without the FutureWarning that torch 2.14's own forward-mode set-up raises
    the first time (``torch.jit.script`` in ``torch._decomp.decompositions_for_jvp``): not ours to
    fix, and it printed on every run. Only that message is filtered."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning
        )
        return torch.func.jvp(fn, primals, tangents)


def _grad_with_graph(loss: torch.Tensor, leaves: Mapping[str, torch.Tensor]) -> dict:
    grads = torch.autograd.grad(loss, list(leaves.values()), create_graph=True, allow_unused=True)
    return {
        k: torch.zeros_like(p) if g is None else g
        for (k, p), g in zip(leaves.items(), grads, strict=True)
    }


def as_objective(
    model: nn.Module | Objective, data: DataLike | Data | None = None, **kwargs
) -> Objective:
    """An :class:`Objective` from a model and data, or the objective itself."""
    if isinstance(model, Objective):
        return model
    return Objective(model, data, **kwargs)
