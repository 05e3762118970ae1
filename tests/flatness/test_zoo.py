"""A model zoo (issue 25): the models researchers bring, each measured by the library and checked
against an independent computation — the dense Hessian of the loss as a function of one flat
parameter vector (``torch.autograd.functional.hessian``), and plain loops for loss and accuracy.

Everything is float64 and tiny (≤ ~200 parameters), so the dense Hessian is exact and cheap.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

import flatness
from flatness import objective as objective_module

# --- the zoo ---------------------------------------------------------------------------------------


class TinyResNet(nn.Module):
    """Conv → BN → ReLU, one residual block with BN, global pooling, a linear head."""

    def __init__(self, c: int = 2, classes: int = 3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c))
        self.head = nn.Linear(c, classes)

    def forward(self, x):
        h = self.stem(x)
        h = F.relu(h + self.block(h))
        return self.head(h.mean(dim=(2, 3)))


class TinyTransformer(nn.Module):
    def __init__(self, features: int = 3, d: int = 4, classes: int = 3):
        super().__init__()
        self.embed = nn.Linear(features, d)
        layer = nn.TransformerEncoderLayer(
            d, nhead=2, dim_feedforward=4, dropout=0.0, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        return self.head(self.encoder(self.embed(x)).mean(dim=1))


class TinyLSTM(nn.Module):
    def __init__(self, features: int = 3, hidden: int = 4, classes: int = 3):
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


@dataclasses.dataclass
class Output:
    """An output object, as Hugging Face models return."""

    logits: torch.Tensor


class DictModel(nn.Module):
    """Called with keyword inputs (``model(**batch)``), returns an output object."""

    def __init__(self, features: int = 4, classes: int = 3):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(features, 6), nn.Tanh(), nn.Linear(6, classes))
        self.scale = nn.Linear(1, classes, bias=False)

    def forward(self, features, weight):
        return Output(self.body(features) + self.scale(weight))


class TupleModel(nn.Module):
    """Returns (logits, hidden), as many research models do."""

    def __init__(self, features: int = 4, classes: int = 3):
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(features, 6), nn.Tanh())
        self.head = nn.Linear(6, classes)

    def forward(self, x):
        h = self.hidden(x)
        return self.head(h), h


def regression_mlp(features: int = 4) -> nn.Module:
    return nn.Sequential(nn.Linear(features, 6), nn.Tanh(), nn.Linear(6, 1))


def _seeded(model: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    for p in model.parameters():
        with torch.no_grad():
            p.copy_(torch.randn_like(p) * 0.7)
    return model.double()


# --- the independent computation -------------------------------------------------------------------


def dense_hessian(model, inputs, y, loss_fn, *, training=False, output_fn=None):
    """The Hessian of ``loss_fn(model(inputs), y)`` in the flat parameter vector, in one batch."""
    names = [k for k, p in model.named_parameters()]
    like = [p.detach() for p in model.parameters()]
    flat0 = torch.cat([p.reshape(-1) for p in like])
    buffers = {k: b.detach().clone() for k, b in model.named_buffers()}

    def loss_of(flat):
        params, start = {}, 0
        for k, p in zip(names, like, strict=True):
            params[k] = flat[start : start + p.numel()].view_as(p)
            start += p.numel()
        state = (params, {k: b.clone() for k, b in buffers.items()})
        if isinstance(inputs, dict):
            out = torch.func.functional_call(model, state, (), inputs)
        else:
            out = torch.func.functional_call(model, state, (inputs,))
        out = out if output_fn is None else output_fn(out)
        return loss_fn(out, y)

    was = model.training
    model.train(training)
    try:
        with sdpa_kernel(SDPBackend.MATH):  # the reference needs second derivatives too
            H = torch.autograd.functional.hessian(loss_of, flat0)
    finally:
        model.train(was)
    return H


def plain_loss_and_accuracy(model, inputs, y, loss_fn, output_fn=None):
    with torch.no_grad():
        out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
        out = out if output_fn is None else output_fn(out)
        acc = (out.argmax(1) == y).double().mean().item() if y.dim() == 1 else math.nan
        return loss_fn(out, y).item(), acc


def check_curvature(model, data, H, trace=True, **kwargs):
    """λmax (Lanczos) and the trace (Hutch++ with as many probes as dimensions, hence exact) of
    the library against the dense Hessian's."""
    eig = torch.linalg.eigvalsh(H)
    hess = flatness.Hessian(model, data, batch_size=kwargs.pop("batch_size", 2048), **kwargs)
    lam = hess.eigenvalues(1, tol=1e-9, max_iter=len(eig))
    assert lam.value[0] == pytest.approx(eig[-1].item(), rel=1e-7, abs=1e-9)
    if not trace:
        return hess
    trace = hess.trace("hutch++", products=3 * len(eig) + 3)
    assert trace.value == pytest.approx(H.trace().item(), rel=1e-7, abs=1e-9)
    return hess


# --- the zoo measured ------------------------------------------------------------------------------


def _classes(n=24, seed=1):
    return torch.randint(0, 3, (n,), generator=torch.Generator().manual_seed(seed))


def test_resnet_with_batch_norm_in_eval_and_train_mode():
    model = _seeded(TinyResNet())
    x = torch.randn(16, 1, 4, 4, dtype=torch.float64)
    y = _classes(16)
    with torch.no_grad():  # non-trivial running statistics
        model.train()
        for _ in range(3):
            model(x + 0.3)
    model.eval()
    check_curvature(model, (x, y), dense_hessian(model, x, y, F.cross_entropy))
    # training mode: batch statistics of the one batch, running statistics untouched
    before = {k: b.clone() for k, b in model.named_buffers()}
    H_train = dense_hessian(model, x, y, F.cross_entropy, training=True)
    hess = check_curvature(model, (x, y), H_train, mode="train")
    assert hess.eigenvalues(1).settings["mode"] == "train"
    assert not model.training
    for k, b in model.named_buffers():
        assert torch.equal(b, before[k]), k
    # the two modes measure different functions here, so the test above can tell them apart
    assert not torch.allclose(H_train, dense_hessian(model, x, y, F.cross_entropy))
    loss, acc = plain_loss_and_accuracy(model, x, y, F.cross_entropy)
    got = flatness.measure(model, (x, y), metrics=["train_loss", "train_acc"])
    assert got["train_loss"].value == pytest.approx(loss, rel=1e-12)
    assert got["train_acc"].value == pytest.approx(acc)
    assert got["train_loss"].settings["mode"] == "eval"


def test_transformer_encoder_every_hessian_measure(monkeypatch):
    model = _seeded(TinyTransformer()).eval()
    x = torch.randn(12, 5, 3, dtype=torch.float64)
    y = _classes(12)
    monkeypatch.setattr(objective_module, "_ATTENTION_WARNED", False)
    H = dense_hessian(model, x, y, F.cross_entropy)
    with pytest.warns(UserWarning, match="SDPBackend.MATH"):
        hess = check_curvature(model, (x, y), H, trace=False)
    # the trace: Hutchinson within four of its standard errors of the exact one
    trace = hess.trace(min_probes=10, max_probes=10)
    assert abs(trace.value - H.trace().item()) < 4 * trace.error_bound
    # every Hessian-vector path, against the dense product
    v = torch.randn(H.shape[0], dtype=torch.float64)
    for path in objective_module.HVP_MODES[1:]:
        got = hess.objective.flat_hvp(v, mode=path)
        assert torch.allclose(got, H @ v, atol=1e-10), path
    # SLQ's extreme node is Lanczos's λmax estimate: the density reaches the top eigenvalue
    esd = flatness.measure(model, (x, y), metrics={"hessian_esd": {"vectors": 1, "steps": 30}})
    top = max(esd["hessian_esd"].extra["nodes"][0])
    assert top == pytest.approx(torch.linalg.eigvalsh(H)[-1].item(), rel=1e-6)


def test_lstm_every_hessian_path_and_memory_estimate():
    model = _seeded(TinyLSTM()).eval()
    x = torch.randn(12, 5, 3, dtype=torch.float64)
    y = _classes(12)
    H = dense_hessian(model, x, y, F.cross_entropy)
    hess = check_curvature(model, (x, y), H)
    assert hess.objective.graph_bytes() > 0  # tuple outputs of the LSTM counted
    v = torch.randn(H.shape[0], dtype=torch.float64)
    for path in objective_module.HVP_MODES[1:]:
        assert torch.allclose(hess.objective.flat_hvp(v, mode=path), H @ v, atol=1e-10), path


def _dict_batches(x, y, size):
    """Hugging Face style: each batch a mapping holding its labels."""
    return [
        {"features": x[i : i + size], "weight": x[i : i + size, :1], "labels": y[i : i + size]}
        for i in range(0, len(y), size)
    ]


def _split_labels(batch):
    return {k: v for k, v in batch.items() if k != "labels"}, batch["labels"]


def test_dict_batches_give_what_tensors_give():
    """Every measure on a loader of dict batches equals the same data given as (x, y)."""
    model = _seeded(DictModel()).eval()
    x = torch.randn(40, 4, dtype=torch.float64)
    y = _classes(40)
    inputs = {"features": x, "weight": x[:, :1]}
    logits = lambda out: out.logits  # noqa: E731
    loader = _dict_batches(x, y, 7)  # uneven batches: 7 × 5 + 5
    names = {
        "train_loss": {},
        "train_error": {},
        "lambda_max": {"tol": 1e-8},
        "hessian_trace": {"min_probes": 5, "max_probes": 5},
        "hessian_top_k": {"k": 2, "tol": 1e-6},
        "keskar_sharpness": {"max_iter": 2},
        "worst_case_sharpness": {"steps": 3},
        "average_sharpness": {"samples": 3},
        "m_sharpness": {"m": 10, "batches": 2, "steps": 2},
        "minibatch_lambda_max": {"b": 10, "n_batches": 2},
        "fisher_rao_norm": {},
        "hessian_esd": {"vectors": 1, "steps": 5},
    }
    on_tensors = flatness.measure(model, (inputs, y), metrics=names, output_fn=logits)
    on_dicts = flatness.measure(
        model, loader, metrics=names, batch_fn=_split_labels, output_fn=logits
    )
    for name in names:
        a, b = on_tensors[name].value, on_dicts[name].value
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12), name
    # against the independent computations
    loss, acc = plain_loss_and_accuracy(model, inputs, y, F.cross_entropy, logits)
    assert on_dicts["train_loss"].value == pytest.approx(loss, rel=1e-12)
    assert on_dicts["train_error"].value == pytest.approx(1 - acc)
    H = dense_hessian(model, inputs, y, F.cross_entropy, output_fn=logits)
    assert on_dicts["lambda_max"].value == pytest.approx(torch.linalg.eigvalsh(H)[-1].item())
    check_curvature(model, loader, H, batch_fn=_split_labels, output_fn=logits)


def test_dict_batches_without_batch_fn_or_output_fn_name_them():
    model = _seeded(DictModel())
    x, y = torch.randn(8, 4, dtype=torch.float64), _classes(8)
    with pytest.raises(TypeError, match="batch_fn="):
        flatness.measure(model, _dict_batches(x, y, 4), metrics=["train_loss"])
    with pytest.raises(TypeError, match=r"output_fn=lambda out: out\.logits"):
        flatness.measure(
            model, _dict_batches(x, y, 4), metrics=["train_loss"], batch_fn=_split_labels
        )


def test_tuple_outputs():
    model = _seeded(TupleModel()).eval()
    x, y = torch.randn(20, 4, dtype=torch.float64), _classes(20)
    first = lambda out: out[0]  # noqa: E731
    with pytest.raises(TypeError, match=r"output_fn=lambda out: out\[0\]"):
        flatness.measure(model, (x, y), metrics=["train_loss"])
    got = flatness.measure(model, (x, y), metrics=["train_loss", "train_acc"], output_fn=first)
    loss, acc = plain_loss_and_accuracy(model, x, y, F.cross_entropy, first)
    assert got["train_loss"].value == pytest.approx(loss, rel=1e-12)
    assert got["train_acc"].value == pytest.approx(acc)
    check_curvature(
        model, (x, y), dense_hessian(model, x, y, F.cross_entropy, output_fn=first), output_fn=first
    )


def test_regression_mlp():
    model = _seeded(regression_mlp()).eval()
    x = torch.randn(30, 4, dtype=torch.float64)
    y = torch.randn(30, 1, dtype=torch.float64)
    check_curvature(model, (x, y), dense_hessian(model, x, y, F.mse_loss), loss_fn=F.mse_loss)
    got = flatness.measure(model, (x, y), metrics=["train_loss", "train_error"], loss_fn=F.mse_loss)
    loss, _ = plain_loss_and_accuracy(model, x, y, F.mse_loss)
    assert got["train_loss"].value == pytest.approx(loss, rel=1e-12)
    # accuracy does not apply to regression: NaN, with the reason
    assert math.isnan(got["train_error"].value)
    assert "class labels" in got["train_error"].extra["not_applicable"]


@pytest.mark.parametrize(
    ("targets", "loss_fn", "match"),
    [
        (torch.randn(10, 1, dtype=torch.float64), F.cross_entropy, "loss_fn=.*mse_loss"),
        (torch.randn(10, dtype=torch.float64), F.mse_loss, r"broadcast.*loss_fn="),
        (torch.randn(10, 1, dtype=torch.float64), lambda o, t: (o - t) ** 2, "scalar"),
    ],
)
def test_targets_that_do_not_fit_the_loss_are_errors(targets, loss_fn, match):
    model = _seeded(regression_mlp())
    with pytest.raises(ValueError, match=match):
        flatness.measure(model, (torch.randn(10, 4, dtype=torch.float64), targets), loss_fn=loss_fn)


def test_float_targets_with_cross_entropy_on_several_outputs_are_errors():
    model = _seeded(nn.Linear(4, 3))
    x, y = torch.randn(10, 4, dtype=torch.float64), torch.randn(10, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="class probabilities.*loss_fn="):
        flatness.measure(model, (x, y), metrics=["lambda_max"])
    soft = torch.softmax(y, dim=1)  # class probabilities are a valid target
    got = flatness.measure(model, (x, soft), metrics=["train_loss"])
    assert got["train_loss"].value == pytest.approx(F.cross_entropy(model(x), soft).item())


def test_values_do_not_depend_on_batching():
    """Batches of 64, 7 and a loader of 5 (uneven last batches) give one loss, λmax and trace."""
    model = _seeded(TinyLSTM()).eval()
    x = torch.randn(33, 4, 3, dtype=torch.float64)
    y = _classes(33)
    metrics = {
        "train_loss": {},
        "lambda_max": {"tol": 1e-9},
        "hessian_trace": {"min_probes": 4, "max_probes": 4},
    }
    ref = flatness.measure(model, (x, y), metrics=metrics, batch_size=64)
    small = flatness.measure(model, (x, y), metrics=metrics, batch_size=7)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=5)
    from_loader = flatness.measure(model, loader, metrics=metrics)
    for name in metrics:
        assert small[name].value == pytest.approx(ref[name].value, rel=1e-9), name
        assert from_loader[name].value == pytest.approx(ref[name].value, rel=1e-9), name


def test_warning_free_on_plain_models():
    model = _seeded(regression_mlp())
    x, y = torch.randn(10, 4, dtype=torch.float64), torch.randn(10, 1, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flatness.measure(model, (x, y), metrics=["lambda_max"], loss_fn=F.mse_loss)


def test_surfaces_and_evaluate_take_batch_fn_and_output_fn():
    model = _seeded(DictModel()).eval()
    other = _seeded(DictModel(), seed=3).eval()
    x, y = torch.randn(20, 4, dtype=torch.float64), _classes(20)
    inputs = {"features": x, "weight": x[:, :1]}
    adapt = {"batch_fn": _split_labels, "output_fn": lambda out: out.logits}
    loader = _dict_batches(x, y, 6)
    plain = flatness.evaluate(model, (inputs, y), output_fn=adapt["output_fn"])
    loss, acc = plain_loss_and_accuracy(model, inputs, y, F.cross_entropy, adapt["output_fn"])
    assert plain.loss == pytest.approx(loss, rel=1e-12) and plain.accuracy == pytest.approx(acc)
    assert flatness.evaluate(model, loader, **adapt).loss == pytest.approx(loss, rel=1e-12)
    line = flatness.surface_1d(model, loader, loader, points=3, **adapt)
    assert line.values["train_loss"][1] == pytest.approx(loss, rel=1e-12)
    path = flatness.interpolate(model, other, loader, ts=[0.0, 1.0], **adapt)
    far = flatness.evaluate(other, loader, **adapt).loss
    assert path.values["train_loss"].tolist() == pytest.approx([loss, far], rel=1e-12)
