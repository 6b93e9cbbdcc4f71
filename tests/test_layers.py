"""Tests for fastbp.layers: the seed's worked example and finite-difference checks."""

import numpy as np
import pytest

from fastbp.layers import (
    Add,
    Affine,
    Mul,
    ReLU,
    Sigmoid,
    SoftmaxWithLoss,
    Tanh,
)

RTOL = 1e-6  # central differences with eps=1e-6 in float64 reach about 1e-9


def numerical_gradient(f, x, eps=1e-6):
    """Central-difference gradient of the scalar function ``f`` at float64 ``x``."""
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        orig = x[i]
        x[i] = orig + eps
        f_plus = f(x.copy())
        x[i] = orig - eps
        f_minus = f(x.copy())
        x[i] = orig
        grad[i] = (f_plus - f_minus) / (2 * eps)
    return grad


def assert_grad_close(analytic, numeric, rtol=RTOL):
    analytic, numeric = np.asarray(analytic), np.asarray(numeric)
    assert analytic.shape == numeric.shape
    scale = np.linalg.norm(analytic) + np.linalg.norm(numeric)
    rel = np.linalg.norm(analytic - numeric) / max(scale, 1e-12)
    assert rel < rtol, f"relative error {rel:.2e}"


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_seed_worked_example():
    a, b, c = -1, 3, 4
    add_ab, add_bc, mul = Add(), Add(), Mul()
    x = add_ab.forward(a, b)
    y = add_bc.forward(b, c)
    assert (x, y, mul.forward(x, y)) == (2, 7, 14)

    dx, dy = mul.backward(1)
    assert (dx, dy) == (7, 2)
    da, db_1 = add_ab.backward(dx)
    db_2, dc = add_bc.backward(dy)
    assert da == 7
    assert db_1 + db_2 == 9  # b feeds both additions: the two paths add up
    assert dc == 2


@pytest.mark.parametrize("layer_cls", [Mul, Add])
def test_binary_layers_numerical_gradient(layer_cls, rng):
    x, y, g = rng.normal(size=(3, 2, 3))
    layer = layer_cls()
    layer.forward(x, y)
    dx, dy = layer.backward(g)
    assert_grad_close(dx, numerical_gradient(lambda v: np.sum(layer_cls().forward(v, y) * g), x))
    assert_grad_close(dy, numerical_gradient(lambda v: np.sum(layer_cls().forward(x, v) * g), y))


def _away_from_zero(rng, shape):
    return rng.uniform(0.1, 2.0, size=shape) * rng.choice([-1.0, 1.0], size=shape)


@pytest.mark.parametrize("layer_cls", [Sigmoid, ReLU, Tanh])
@pytest.mark.parametrize("shape", [(5,), (3, 4)])
def test_activation_numerical_gradient(layer_cls, shape, rng):
    x = _away_from_zero(rng, shape)  # ReLU has a kink at 0
    g = rng.normal(size=shape)
    layer = layer_cls()
    layer.forward(x)
    numeric = numerical_gradient(lambda v: np.sum(layer_cls().forward(v) * g), x)
    assert_grad_close(layer.backward(g), numeric)


def test_sigmoid_stores_out():
    layer = Sigmoid()
    out = layer.forward(np.array([-1.0, 0.0, 2.0]))
    np.testing.assert_allclose(layer.out, out)
    np.testing.assert_allclose(out, 1 / (1 + np.exp(-np.array([-1.0, 0.0, 2.0]))))
    np.testing.assert_allclose(layer.backward(np.ones(3)), out * (1 - out))


def test_sigmoid_extreme_inputs_do_not_warn():
    with np.errstate(all="raise"):
        out = Sigmoid().forward(np.array([-1000.0, 1000.0]))
    np.testing.assert_allclose(out, [0.0, 1.0])


def test_tanh_backward_from_output():
    layer = Tanh()
    out = layer.forward(np.array([-0.5, 0.3]))
    np.testing.assert_allclose(layer.backward(np.full(2, 2.0)), 2 * (1 - out**2))


def test_relu_does_not_modify_inputs_and_zero_gradient_at_zero():
    x = np.array([-1.0, 0.0, 2.0])
    dout = np.array([5.0, 6.0, 7.0])
    x_copy, dout_copy = x.copy(), dout.copy()
    layer = ReLU()
    out = layer.forward(x)
    dx = layer.backward(dout)
    np.testing.assert_array_equal(x, x_copy)
    np.testing.assert_array_equal(dout, dout_copy)
    np.testing.assert_array_equal(out, [0.0, 0.0, 2.0])
    np.testing.assert_array_equal(dx, [0.0, 0.0, 7.0])
    assert dx is not dout


@pytest.mark.parametrize("x_shape", [(3,), (4, 3)])
def test_affine_numerical_gradient(x_shape, rng):
    W, b = rng.normal(size=(3, 2)), rng.normal(size=2)
    x = rng.normal(size=x_shape)
    g = rng.normal(size=x_shape[:-1] + (2,))
    layer = Affine(W, b)
    out = layer.forward(x)
    assert out.shape == g.shape
    dx = layer.backward(g)
    assert dx.shape == x.shape
    assert_grad_close(dx, numerical_gradient(lambda v: np.sum(Affine(W, b).forward(v) * g), x))
    assert_grad_close(
        layer.dW, numerical_gradient(lambda v: np.sum(Affine(v, b).forward(x) * g), W)
    )
    assert_grad_close(
        layer.db, numerical_gradient(lambda v: np.sum(Affine(W, v).forward(x) * g), b)
    )


def test_affine_does_not_modify_caller_arrays(rng):
    W, b, x = rng.normal(size=(3, 2)), rng.normal(size=2), rng.normal(size=(4, 3))
    copies = [a.copy() for a in (W, b, x)]
    layer = Affine(W, b)
    layer.forward(x)
    layer.backward(np.ones((4, 2)))
    layer.W -= 0.1 * layer.dW
    for a, a_copy in zip((W, b, x), copies):
        np.testing.assert_array_equal(a, a_copy)


@pytest.mark.parametrize("x_shape", [(3,), (4, 3)])
def test_affine_shape_mismatch_names_both_shapes(x_shape):
    layer = Affine(np.ones((2, 2)), np.zeros(2))
    with pytest.raises(ValueError) as excinfo:
        layer.forward(np.ones(x_shape))
    message = str(excinfo.value)
    assert str(x_shape) in message
    assert "(2, 2)" in message


def test_affine_validates_parameters():
    with pytest.raises(ValueError, match="2-D"):
        Affine(np.ones(3), np.zeros(3))
    with pytest.raises(ValueError, match=r"\(3,\)"):
        Affine(np.ones((2, 2)), np.zeros(3))


def _labels_and_one_hot(rng, n=4, k=3):
    labels = rng.integers(0, k, size=n)
    return labels, np.eye(k)[labels]


def test_softmax_with_loss_numerical_gradient(rng):
    x = rng.normal(size=(4, 3))
    labels, one_hot = _labels_and_one_hot(rng)
    for t in (labels, one_hot):
        layer = SoftmaxWithLoss()
        layer.forward(x, t)
        numeric = numerical_gradient(lambda v, t=t: SoftmaxWithLoss().forward(v, t), x)
        assert_grad_close(layer.backward(), numeric)
        np.testing.assert_allclose(layer.backward(2.0), 2.0 * layer.backward())


def test_softmax_with_loss_label_forms_agree(rng):
    x = rng.normal(size=(4, 3))
    labels, one_hot = _labels_and_one_hot(rng)
    by_label, by_one_hot = SoftmaxWithLoss(), SoftmaxWithLoss()
    assert by_label.forward(x, labels) == by_one_hot.forward(x, one_hot)
    np.testing.assert_array_equal(by_label.backward(), by_one_hot.backward())


def test_softmax_with_loss_single_sample(rng):
    x = rng.normal(size=3)
    layer = SoftmaxWithLoss()
    loss = layer.forward(x, 1)
    assert loss == SoftmaxWithLoss().forward(x, np.eye(3)[1])
    assert layer.backward().shape == (3,)
    assert_grad_close(
        layer.backward(), numerical_gradient(lambda v: SoftmaxWithLoss().forward(v, 1), x)
    )


def test_softmax_with_loss_perfect_prediction_and_stability():
    x = np.array([[100.0, 0.0, 0.0], [0.0, 0.0, 1000.0]])
    layer = SoftmaxWithLoss()
    assert abs(layer.forward(x, np.array([0, 2]))) < 1e-12
    wrong = layer.forward(x, np.array([1, 0]))  # probability underflows to 0
    assert np.isfinite(wrong) and wrong > 30


@pytest.mark.parametrize(
    "x, t",
    [
        (np.zeros((2, 3)), np.array([0, 3])),
        (np.zeros((2, 3)), np.array([-1, 0])),
        (np.zeros((2, 3)), np.array([0.0, 1.0])),
        (np.zeros((2, 3)), np.array([0, 1, 2])),
        (np.zeros((2, 3)), np.zeros((2, 4))),
        (np.zeros((2, 3, 1)), np.array([0, 1])),
    ],
)
def test_softmax_with_loss_rejects_bad_input(x, t):
    with pytest.raises(ValueError, match="SoftmaxWithLoss"):
        SoftmaxWithLoss().forward(x, t)


def test_two_layer_network_chain_rule(rng):
    """Backward through Affine -> Sigmoid -> Affine -> SoftmaxWithLoss."""
    x = rng.normal(size=(4, 3))
    labels, _ = _labels_and_one_hot(rng, n=4, k=2)
    W1, b1 = rng.normal(size=(3, 5)), rng.normal(size=5)
    W2, b2 = rng.normal(size=(5, 2)), rng.normal(size=2)

    def loss(W1):
        layers = [Affine(W1, b1), Sigmoid(), Affine(W2, b2)]
        h = x
        for layer in layers:
            h = layer.forward(h)
        last = SoftmaxWithLoss()
        return last.forward(h, labels), layers, last

    _, layers, last = loss(W1)
    dout = last.backward()
    for layer in reversed(layers):
        dout = layer.backward(dout)
    assert_grad_close(layers[0].dW, numerical_gradient(lambda v: loss(v)[0], W1))
