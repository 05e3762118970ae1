"""Wilson et al.'s counter-example: every method fits the training set, gradient descent and heavy
ball generalise perfectly, the adaptive methods predict the majority class."""

import pytest

from experiments.analyse import wilson


def test_problem_structure():
    x, y = wilson.make_problem(10, 0.7, seed=0)
    assert x.shape == (10, 60)
    assert (x[:, 0] == y).all() and (x[:, 1] == 1).all() and (x[:, 2] == 1).all()
    unique = x[:, 3:].sum(dim=1)
    assert ((unique == 1) == (y > 0)).all() and ((unique == 5) == (y < 0)).all()


def test_adaptive_methods_predict_the_majority_class():
    runs = wilson.run(n=20, p=0.7, seeds=1, steps=300, n_test=1000).set_index("optimizer")
    assert (runs["train_error"] == 0).all()
    for name in ("sgd", "heavy_ball"):
        assert runs.loc[name, "test_error"] == 0.0
    for name in ("adagrad", "rmsprop", "adam"):
        # predicting +1 everywhere: the error is the share of negatives among the test points
        assert runs.loc[name, "test_error"] == pytest.approx(0.3, abs=0.05)
        assert runs.loc[name, "w2+w3"] > abs(runs.loc[name, "w1"])
