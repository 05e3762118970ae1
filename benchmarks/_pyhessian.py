"""PyHessian (Yao et al. 2020) as the comparator of benchmarks/hessian.py: the ``pyhessian``
package as a user calls it, with its Hessian-vector products counted, or, where the package is not
installed, its algorithms re-implemented (checked against the package: the same products and values
to float rounding on the default MLP)."""

from __future__ import annotations

import importlib
import importlib.metadata
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# pyhessian calls loss.backward(create_graph=True) by design; we clear the .grad cycle after it.
warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")


@dataclass
class Run:
    value: float
    products: int
    hvp_mode: str
    error_bound: float | None = None


class PyHessian:
    """The ``pyhessian`` package as a user calls it (``data=(x, y)``: one batch, its gradient graph
    built once in the constructor), with its Hessian-vector products counted. Where the package is
    not installed, :class:`PyHessianAlgorithm` stands in."""

    label = "pyhessian {version}"

    def __init__(self):
        self.module = importlib.import_module("pyhessian.hessian")
        self.version = importlib.metadata.version("pyhessian")
        self.products = 0
        real = self.module.hessian_vector_product

        def counting(*args, **kwargs):
            self.products += 1
            return real(*args, **kwargs)

        self.module.hessian_vector_product = counting

    def hessian(self, model, x, y):
        """Its constructor: forward, then backward with create_graph=True."""
        return self.module.hessian(model, F.cross_entropy, data=(x, y), cuda=x.is_cuda)

    def run(self, model, x, y, seed: int, what: str, **settings) -> Run:
        # Its backward accumulates into .grad: start from none, and clear the graph-holding .grad
        # it leaves (a reference cycle) so that runs neither leak nor add up.
        model.zero_grad(set_to_none=True)
        torch.manual_seed(seed)
        self.products = 0
        try:
            h = self.hessian(model, x, y)
            if what == "eigen":
                value = h.eigenvalues(**settings)[0][0]
            else:
                value = float(np.mean(h.trace(**settings)))
        finally:
            model.zero_grad(set_to_none=True)
        return Run(float(value), self.products, "cached graph, 1 batch")

    def hvp_timer(self, model, x, y) -> Callable[[], object]:
        h = self.hessian(model, x, y)
        v = [torch.randn_like(p) for p in h.params]
        return lambda: self.module.hessian_vector_product(h.gradsH, h.params, v)


class PyHessianAlgorithm(PyHessian):
    """PyHessian 0.1's algorithms re-implemented (used only when the package is not installed):
    the gradient graph of the whole batch built once, power iteration stopped when the Rayleigh
    quotient changes by < tol relative (returning the previous value, as the package does), and
    Hutchinson stopped when the running mean changes by < tol relative."""

    label = "PyHessian's algorithm (re-implemented, package not installed)"

    def __init__(self):
        self.version = "re-implemented"

    def _graph(self, model, x, y):
        params = [p for p in model.parameters() if p.requires_grad]
        loss = F.cross_entropy(model.eval()(x), y)
        return params, torch.autograd.grad(loss, params, create_graph=True)

    def _hvp(self, params, grads, v):
        return torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)

    def run(self, model, x, y, seed: int, what: str, maxIter: int = 100, tol: float = 1e-3) -> Run:  # noqa: N803
        torch.manual_seed(seed)
        params, grads = self._graph(model, x, y)
        dot = lambda a, b: sum((ai * bi).sum() for ai, bi in zip(a, b, strict=True)).item()  # noqa: E731
        products = 0
        if what == "eigen":
            v = [torch.randn_like(p) for p in params]
            norm = math.sqrt(dot(v, v))
            v = [t / (norm + 1e-6) for t in v]
            value = None
            for _ in range(maxIter):
                hv = self._hvp(params, grads, v)
                products += 1
                tmp = dot(hv, v)
                norm = math.sqrt(dot(hv, hv))
                v = [t / (norm + 1e-6) for t in hv]
                if value is not None and abs(value - tmp) / (abs(value) + 1e-6) < tol:
                    break
                value = tmp
        else:
            samples, value = [], 0.0
            for _ in range(maxIter):
                v = [torch.randint_like(p, high=2) * 2 - 1 for p in params]
                samples.append(dot(self._hvp(params, grads, v), v))
                products += 1
                if abs(np.mean(samples) - value) / (value + 1e-6) < tol:
                    break
                value = float(np.mean(samples))
            value = float(np.mean(samples))
        return Run(float(value), products, "cached graph, 1 batch")

    def hvp_timer(self, model, x, y) -> Callable[[], object]:
        params, grads = self._graph(model, x, y)
        v = [torch.randn_like(p) for p in params]
        return lambda: self._hvp(params, grads, v)


def comparator() -> PyHessian:
    try:
        return PyHessian()
    except ImportError:
        return PyHessianAlgorithm()
