"""The problems and the peers that train on them, each written the way its users write it.

Every peer trains a fresh network for a given number of epochs per call (SGD,
learning rate 0.01, momentum 0.9 without Nesterov, no L2 penalty, softmax +
log loss, float32, rows shuffled every epoch) and then reports its training
accuracy.  The estimators are timed through ``fit(max_iter=epochs)``, as their
users call them; the numpy loop is the one a reader writes from the seed
notebook, with nothing of fastbp in it.
"""

from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial

import numpy as np
from scipy.linalg.blas import get_blas_funcs

from .protocol import ALL_CORES, Call, blas_threads

LR, MOMENTUM = 0.01, 0.9


@dataclass
class Problem:
    """A classification problem, the network trained on it and the epochs of one timed round."""

    name: str
    X: np.ndarray  # standardised float32
    y: np.ndarray  # labels 0 .. k-1
    hidden: tuple
    batch: int
    epochs: int
    probe_epochs: int = 5  # per round of the thread-count choice: enough to spread a fit's set-up over

    @property
    def units(self):
        return (self.X.shape[1], *self.hidden, int(self.y.max()) + 1)

    def onehot(self):
        return np.eye(self.units[-1], dtype=self.X.dtype)[self.y]

    def initial_weights(self, seed=0):
        """scikit-learn's Glorot-uniform initialisation: ``[(W, b), ...]``, shared by the numpy, torch and jax peers."""
        rng, layers = np.random.default_rng(seed), []
        for fan_in, fan_out in zip(self.units[:-1], self.units[1:]):
            bound = np.sqrt(6.0 / (fan_in + fan_out))
            layers.append(tuple(rng.uniform(-bound, bound, shape).astype(self.X.dtype)
                                for shape in ((fan_in, fan_out), (fan_out,))))
        return layers

    def epoch_flops(self):
        """GEMM flops of one epoch: X @ W and A.T @ D for every layer, D @ W.T for all but the first."""
        products = [a * b for a, b in zip(self.units[:-1], self.units[1:])]
        return 2 * len(self.X) * (2 * sum(products) + sum(products[1:]))

    def accuracy(self, labels):
        return float(np.mean(labels == self.y))


def _standardise(X):
    std = X.std(axis=0)
    return ((X - X.mean(axis=0)) / np.where(std > 0, std, 1.0)).astype(np.float32)


def digits_problem(epochs=20):
    """scikit-learn's digits (1797 x 64), 64-128-10, batch 32."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return Problem("digits 1797x64, 64-128-10, batch 32", _standardise(X), y, (128,), 32, epochs)


def mnist_problem(rows=60000, epochs=3):
    """An MNIST-sized problem: ``make_classification(rows, 784, n_informative=50, n_classes=10)``, 784-256-128-10."""
    from sklearn.datasets import make_classification

    X, y = make_classification(rows, 784, n_informative=50, n_classes=10, random_state=0)
    return Problem(f"MNIST-sized {rows}x784, 784-256-128-10, batch 128", _standardise(X), y, (256, 128), 128, epochs,
                   probe_epochs=1)


class Peer:
    """One way of training ``problem``: ``train(epochs, threads)`` from fresh weights, then ``predict()``."""

    name = ""

    def __init__(self, problem: Problem):
        self.problem = problem

    def context(self, threads):
        """Entered around a timed round, outside the timing: the peer at ``threads`` threads."""
        return blas_threads(threads)

    def call(self, threads, epochs=None) -> Call:
        epochs = epochs or self.problem.epochs
        return Call(partial(self.train, epochs, threads), epochs, partial(self.context, threads))

    def accuracy(self):
        return self.problem.accuracy(self.predict())


class SklearnFit(Peer):
    """scikit-learn's ``MLPClassifier(...).fit(X, y)`` with ``max_iter=epochs`` and no early stop."""

    name = "scikit-learn fit"

    def make(self, threads, **params):
        """The estimator, to run at ``threads`` threads (with :meth:`context` around its fit)."""
        from sklearn.neural_network import MLPClassifier

        return MLPClassifier(**params)

    def estimator(self, epochs, threads):
        return self.make(threads, **self.params(epochs))

    def params(self, epochs):
        p = self.problem
        return {"hidden_layer_sizes": p.hidden, "solver": "sgd", "batch_size": p.batch, "learning_rate_init": LR,
                "momentum": MOMENTUM, "nesterovs_momentum": False, "alpha": 0.0, "max_iter": epochs, "tol": 0.0,
                "n_iter_no_change": epochs + 1, "random_state": 0}

    def train(self, epochs, threads):
        self.model = self.estimator(epochs, threads).fit(self.problem.X, self.problem.y)

    def predict(self):
        return self.model.predict(self.problem.X)


class FastbpFit(SklearnFit):
    """fastbp's ``MLPClassifier``, the same call; its thread count is its own ``n_threads`` parameter."""

    name = "fastbp fit"

    def make(self, threads, **params):
        from fastbp import MLPClassifier

        return MLPClassifier(**params, n_threads=None if threads >= ALL_CORES else threads)

    def context(self, threads):
        return nullcontext()


class FastbpPartialFit(FastbpFit):
    """fastbp's ``MLPClassifier``, one ``partial_fit`` call per epoch: a streaming user's loop."""

    name = "fastbp partial_fit"

    def train(self, epochs, threads):
        self.model = model = self.estimator(epochs, threads)
        classes = np.unique(self.problem.y)
        for _ in range(epochs):
            model.partial_fit(self.problem.X, self.problem.y, classes=classes)


class NumpyLoop(Peer):
    """The training loop a reader writes from the seed notebook: ``np.maximum(X @ W + b, 0)``, softmax, ``@``."""

    name = "numpy loop"

    def train(self, epochs, threads):
        p, rng = self.problem, np.random.default_rng(1)
        X, Y, n = p.X, p.onehot(), len(p.X)
        weights = [[W.copy(), b.copy()] for W, b in p.initial_weights()]
        velocity = [[np.zeros_like(W), np.zeros_like(b)] for W, b in weights]
        for _ in range(epochs):
            order, loss = rng.permutation(n), 0.0
            for start in range(0, n, p.batch):
                idx = order[start:start + p.batch]
                x, t = X[idx], Y[idx]
                acts = [x]
                for W, b in weights[:-1]:
                    acts.append(np.maximum(acts[-1] @ W + b, 0))
                z = acts[-1] @ weights[-1][0] + weights[-1][1]
                e = np.exp(z - z.max(axis=1, keepdims=True))
                out = e / e.sum(axis=1, keepdims=True)
                loss += -np.sum(t * np.log(out + 1e-7))  # the book's cross_entropy_error
                delta = (out - t) / len(idx)
                grads = [None] * len(weights)
                for i in range(len(weights) - 1, -1, -1):
                    grads[i] = (acts[i].T @ delta, delta.sum(axis=0))
                    if i:
                        delta = (delta @ weights[i][0].T) * (acts[i] > 0)
                for layer, vel, grad in zip(weights, velocity, grads):
                    for param, v, g in zip(layer, vel, grad):
                        v *= MOMENTUM
                        v -= LR * g
                        param += v
        self.weights = weights

    def predict(self):
        A = self.problem.X
        for W, b in self.weights[:-1]:
            A = np.maximum(A @ W + b, 0)
        return (A @ self.weights[-1][0] + self.weights[-1][1]).argmax(axis=1)


_GEMM = {}  # dtype -> scipy's ?gemm: the lookup costs more than a small product


def gemm(A, B, out):
    """``out[...] = A @ B`` in scipy's BLAS, the library fastbp's nopython ``gemm`` calls; ``out`` C-contiguous.

    BLAS is column-major, so it computes ``out.T = B.T @ A.T``; each operand
    goes in as the Fortran-ordered array it already is (transposed or not), so
    nothing is copied.  About half a microsecond of Python per call.
    """
    fn = _GEMM.get(out.dtype.char) or _GEMM.setdefault(out.dtype.char, get_blas_funcs("gemm", dtype=out.dtype))
    (a, trans_a), (b, trans_b) = (((M, 0) if M.flags.f_contiguous else (M.T, 1)) for M in (B.T, A.T))
    fn(1.0, a, b, trans_a=trans_a, trans_b=trans_b, c=out.T, overwrite_c=True)


class BlasOnly(Peer):
    """Only the matrix products of an epoch, same shapes, into preallocated arrays: the floor for any trainer.

    Per minibatch: ``X @ W`` for every layer, ``A.T @ D`` for every layer and
    ``D @ W.T`` for all but the first; no gather, no activation, no update.
    """

    name = "BLAS only"

    def __init__(self, problem):
        super().__init__(problem)
        p, rng = problem, np.random.default_rng(2)
        self.weights = [W for W, _ in p.initial_weights()]
        self.grads = [np.empty_like(W) for W in self.weights]
        self.x = rng.standard_normal((p.batch, p.units[0])).astype(p.X.dtype)
        self.acts = [np.empty((p.batch, u), p.X.dtype) for u in p.units[1:]]
        self.deltas = [np.full_like(a, 1e-3) for a in self.acts]
        self.steps = [(s, min(p.batch, len(p.X) - s)) for s in range(0, len(p.X), p.batch)]

    def train(self, epochs, threads):
        L = len(self.weights)
        for _ in range(epochs):
            for _, n in self.steps:
                inputs = [self.x[:n]] + [a[:n] for a in self.acts[:-1]]
                for i in range(L):
                    gemm(inputs[i], self.weights[i], self.acts[i][:n])
                for i in range(L - 1, -1, -1):
                    gemm(inputs[i].T, self.deltas[i][:n], self.grads[i])
                    if i:
                        gemm(self.deltas[i][:n], self.weights[i].T, self.deltas[i - 1][:n])

    def accuracy(self):
        return None
