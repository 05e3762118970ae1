"""The training loss as a function of the parameters: value, gradient and Hessian-vector products.

Every measure of the catalogue takes an :class:`Objective` and its settings. The objective is exact
over the whole dataset (batches are summed through :func:`flatness.evaluate.accumulate`), runs the
model in the mode asked for (eval by default) through ``torch.func.functional_call`` and never
changes it: not its parameters, buffers, ``.grad`` or mode, nor an autograd graph the caller holds.
Hessian-vector products cache the gradient's graph, batch by batch, whenever the graphs fit in
memory (PyHessian's way, Yao et al. 2020): one backward pass per product instead of a forward and
two backward passes.

Second derivatives need kernels that have them. Scaled-dot-product attention (``nn.MultiheadAttention``,
``nn.TransformerEncoder``, ``F.scaled_dot_product_attention``) runs on ``SDPBackend.MATH`` while a
Hessian-vector product is computed: the flash and memory-efficient kernels have no double backward
(same numbers, more memory). Recurrent layers (LSTM, GRU) run without cuDNN for derivatives on CUDA,
whose RNN kernels differentiate only in training mode and never twice.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from flatness import batch as B
from flatness import distributed
from flatness import params as P
from flatness.data import Data, DataLike, as_data
from flatness.evaluate import Evaluation, LossFn, accumulate, check_mode, eval_mode, evaluate
from flatness.task import batch_loss

HVP_MODES = ("auto", "cached-graph", "forward-over-reverse", "reverse-over-reverse")


class Objective:
    """The mean loss of ``model`` over ``data`` as a function of its trainable parameters.

    ``data`` is ``(inputs, targets)`` tensors or a loader of batches (:mod:`flatness.data`; inputs a
    tensor, a tuple or a mapping of tensors); tensors are cut into batches of ``batch_size``, and
    each batch's mean loss is weighted by its number of targets. ``batch_fn`` turns a batch of
    another layout into ``(inputs, targets)`` and ``output_fn`` a model output that is not the
    predictions tensor into it (:mod:`flatness.batch`). ``names`` restricts the parameters that
    vary (default: all trainable ones); no weight-decay term is included. ``graph_memory`` caps the
    bytes that cached gradient graphs may take (default: half the free accelerator memory, or a
    quarter of the available RAM).

    ``mode="eval"`` (default) measures the function the model computes at test time: batch norm
    uses its running statistics, dropout is off. ``mode="train"`` measures the training loss as
    the optimiser saw it: batch norm normalises by each batch's statistics (so the value depends
    on the batches: pass tensors, or a loader with fixed batches) and its running statistics are
    never updated. Dropout in training mode draws a new function on every pass, which no
    iterative measure can use: ``mode="train"`` on a model with active dropout is refused.
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
        mode: str = "eval",
        batch_fn: B.BatchFn | None = None,
        output_fn: B.OutputFn | None = None,
    ):
        self.training = check_mode(mode)
        self.mode = mode
        if self.training:
            refuse_dropout(model)
        self.model, self.loss_fn = model, loss_fn
        self.data = as_data(data, batch_fn=batch_fn, output_fn=output_fn)
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
        self.dim = sum(p.numel() for p in self.params.values())
        self.hvp_count = 0
        self.hvp_mode: str | None = None  # the path the last product took
        self.graph_memory = graph_memory
        self._graph = None  # (leaves, [(name, gradient with graph)]) for the cached path
        self._cache: bool | None = None  # whether auto caches graphs: decided once, on first use
        self._evaluation: Evaluation | None = None
        self._subsets: dict[int, Objective] = {}

    @property
    def n(self) -> int:
        """The number of samples (a loader is counted on first use, by one pass)."""
        return len(self.data)

    # --- the objective on part of the data, and plain evaluation ---------------------------------

    def on(self, data: DataLike) -> Objective:
        """The same objective (model, loss, mode, parameters, output_fn) on other data."""
        return Objective(
            self.model,
            as_data(data, output_fn=self.data.output_fn),
            self.loss_fn,
            batch_size=self.batch_size,
            names=self.names,
            graph_memory=self.graph_memory,
            mode=self.mode,
        )

    def subset(self, n: int | None) -> Objective:
        """The same objective on the first ``n`` samples (itself for None); cached per ``n``. A
        loader is read once, up to those samples."""
        if n is None or (self.data.is_tensors and n >= self.n):
            return self
        if n not in self._subsets:
            self._subsets[n] = self.on(self.data.head(n))
        return self._subsets[n]

    def evaluation(self) -> Evaluation:
        """Loss and accuracy of the model's own weights on the data (computed once)."""
        if self._evaluation is None:
            self._evaluation = evaluate(
                self.model, self.data, self.loss_fn, batch_size=self.batch_size, mode=self.mode
            )
        return self._evaluation

    # --- value, gradient -------------------------------------------------------------------------

    def _state(self, params: Mapping[str, torch.Tensor]) -> tuple[dict, dict]:
        # In training mode batch norm writes its running statistics in place: it gets copies.
        buffers = self.buffers
        if self.training:
            buffers = {k: b.clone() for k, b in buffers.items()}
        return {**self.frozen, **params}, buffers

    def _batch_loss(self, params: Mapping[str, torch.Tensor], xb, yb) -> torch.Tensor:
        out = self.data.call(self.model, xb, self._state(params))
        return batch_loss(self.loss_fn, out, yb)

    @contextlib.contextmanager
    def in_mode(self, derivatives: int = 0) -> Iterator[None]:
        """The block runs the model in this objective's mode, with kernels that have the
        ``derivatives`` needed (see the module docstring)."""
        with contextlib.ExitStack() as stack:
            stack.enter_context(eval_mode(self.model, training=self.training))
            if derivatives >= 1 and self.device.type == "cuda" and _has_rnn(self.model):
                stack.enter_context(torch.backends.cudnn.flags(enabled=False))
            if derivatives >= 2:
                _warn_attention(self.model)
                stack.enter_context(sdpa_kernel(SDPBackend.MATH))
            yield

    def _sum(self, per_batch, detach: bool = True, derivatives: int = 0):
        with self.in_mode(derivatives):
            total, self.batch_size = accumulate(
                self.data,
                per_batch,
                self.batch_size,
                detach=detach,
                on_retry=self._drop_graph,
                device=self.device,
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
        grads, value = self._sum(lambda xb, yb: grad_fn(params, xb, yb), derivatives=1)
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
                self._hvp_per_batch(v, dict(self.params if params is None else params), mode),
                derivatives=2,
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
        hooks = [  # outputs may be tuples (an LSTM's) or dicts: count every tensor in them
            m.register_forward_hook(
                lambda _m, _i, out: sizes.append(sum(t.numel() for t in B.leaves(out)))
            )
            for m in self.model.modules()
            if not list(m.children())
        ]
        try:
            xb, _ = next(iter(self.data.batches(1, self.device)))
            # eval mode whatever the objective's: the sizes are the same, and batch norm in
            # training mode refuses a single sample
            with torch.no_grad(), eval_mode(self.model):
                self.data.call(self.model, B.index(xb, slice(0, 1)), self._state(self.params))
        finally:
            for h in hooks:
                h.remove()
        element = next(iter(self.params.values())).element_size()
        per_sample = 3 * (sum(sizes) + B.per_sample_numel(xb)) * element
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
                    derivatives=2,
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


def refuse_dropout(model: nn.Module) -> None:
    """Raise when ``model`` has dropout that training mode would switch on."""
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            p = m.p
        elif isinstance(m, nn.MultiheadAttention) or (
            isinstance(m, nn.RNNBase) and m.num_layers > 1
        ):
            p = m.dropout
        else:
            continue
        if p > 0:
            raise ValueError(
                f"mode='train' with dropout (module {name or type(m).__name__!r}, p={p:g}): every "
                "pass draws new dropout masks, so the loss is another function on each pass and "
                "an iterative measure (Hessian, sharpness) means nothing; use mode='eval' (the "
                "default) or set the dropout probability to 0"
            )


def _has_rnn(model: nn.Module) -> bool:
    return any(isinstance(m, nn.RNNBase) for m in model.modules())


_ATTENTION_WARNED = False


def _warn_attention(model: nn.Module) -> None:
    """Say once per process that attention runs on the math kernel for second derivatives."""
    global _ATTENTION_WARNED
    if _ATTENTION_WARNED or not any(isinstance(m, nn.MultiheadAttention) for m in model.modules()):
        return
    _ATTENTION_WARNED = True
    warnings.warn(
        "flatness: scaled-dot-product attention runs on SDPBackend.MATH for Hessian-vector "
        "products (the flash and memory-efficient kernels have no second derivative); the numbers "
        "are the same, memory use is higher",
        stacklevel=4,
    )


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
