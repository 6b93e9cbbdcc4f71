"""The network: layer sizes, one flat parameter vector, workspaces, and ``gradients``.

All weights and biases live in one contiguous array (every coefficient matrix,
then every intercept: scikit-learn's packing order), and ``coefs`` /
``intercepts`` are views into it.  The optimizer updates the whole vector in
one pass, L-BFGS hands it to scipy as it is, and saving is one array.
"""

import numpy as np

from . import halves
from ._config import ACTIVATIONS, CHUNK_ROWS, OUT_ACTIVATIONS, activation_code
from ._threads import chunked
from ._validation import check_matrix, check_sample_weight, check_vector
from .kernels import loss_sum
from .step import Batch, Layout, Penalty, Workspace, chunk_pass_address, kernels_for, objective

PREDICT_CHUNK = 2048  # rows per forward chunk in predict: bounds memory at chunk * sum(widths)
PREDICT_BYTES = 64 << 20  # and fewer rows for wide networks: predict's scratch memory stays below this

# Row chunks of a training batch (see fastbp._threads): at least CHUNK_ROWS rows
# each (fastbp._config); a power of two up to MAX_CHUNKS, so two or four cores
# share them evenly; and their extra gradient buffers bounded.
MAX_CHUNKS = 8
MAX_PARTIAL_BYTES = 64 << 20
# A batch trains in unit halves (fastbp.halves) when every hidden layer has at least HALVES_MIN_UNITS
# units and the network has at least HALVES_PARAMS_PER_ROW parameters per batch row: then each step's
# pass over the parameters (both cores reading all of them and two chunk gradients summed, or one core
# doing it all) costs more than the halves' smaller, more numerous products and their exchange.
# Measured on 2 cores (epoch time, halves / the alternative): digits at batch 32 with 128 hidden units
# 1.00 when the halves ran one epoch per call, 0.78 since they run several (left to one chunk by the
# shapes all the same, as compiling the halves would add seconds to a first fit: a network of one
# hidden layer trains in them once their code is ready, see halves_exact), 256 units 0.72, 512
# units 0.60; batch 200 with 128 or 256 units 1.30 and 1.06 (row chunks stay); an MNIST-sized
# 784-256-128-10 network at batch 128 0.85, at 256 0.85; 784-128-64-10 at 128 1.06.  On one thread
# (n_threads=1) both halves run in turn: 0.96x to 1.25x the one-chunk epoch's time in these cases.
HALVES_MIN_UNITS = 128
HALVES_PARAMS_PER_ROW = 512


class Network:
    """A multi-layer perceptron's parameters and the buffers to run it.

    Parameters
    ----------
    layer_units : sequence of int
        ``[n_features, hidden_1, ..., n_outputs]``.
    activation : str
        Hidden activation ("identity", "relu", "logistic", "tanh").
    out_activation : str
        Output activation ("identity", "logistic", "softmax", "exp").
    dtype : float32 or float64
    params : ndarray, optional
        An existing flat parameter vector to wrap (not copied).
    """

    def __init__(self, layer_units, activation, out_activation, dtype, params=None):
        self.layer_units = tuple(int(u) for u in layer_units)
        self.activation = activation
        self.out_activation = out_activation
        self.hidden_code = activation_code(activation, ACTIVATIONS)
        self.out_code = activation_code(out_activation, OUT_ACTIVATIONS, "out_activation")
        self.dtype = np.dtype(dtype)
        self.sizes = np.array(self.layer_units, dtype=np.int64)
        fan_in, fan_out = self.sizes[:-1], self.sizes[1:]
        self.coef_off = np.concatenate([[0], np.cumsum(fan_in * fan_out)[:-1]]).astype(np.int64)
        self.n_coef = int(np.sum(fan_in * fan_out))
        self.icpt_off = (self.n_coef + np.concatenate([[0], np.cumsum(fan_out)[:-1]])).astype(np.int64)
        self.n_params = self.n_coef + int(np.sum(fan_out))
        if params is None:
            params = np.zeros(self.n_params, self.dtype)
        elif params.shape != (self.n_params,) or params.dtype != self.dtype or not params.flags.c_contiguous:
            raise ValueError(f"params must be a contiguous {self.dtype} vector of {self.n_params} elements, "
                             f"got {params.dtype} of shape {params.shape}")
        self.params = params
        self.coefs = [params[o:o + a * b].reshape(a, b) for o, a, b in zip(self.coef_off, fan_in, fan_out)]
        self.intercepts = [params[o:o + b] for o, b in zip(self.icpt_off, fan_out)]
        hidden = self.layer_units[1:-1]
        # One hidden layer as wide as unit halves take: a one-chunk step computes in their order, so that the
        # schedule of such a network's batches (one chunk, or two halves) never changes its result.
        self.halves_exact = len(hidden) == 1 and hidden[0] >= HALVES_MIN_UNITS
        out_cut, runs = halves.one_chunk_order(self.sizes, self.coef_off, self.icpt_off, self.n_coef, self.n_params,
                                               self.halves_exact)
        self.layout = Layout(self.sizes, self.coef_off, self.icpt_off, self.n_coef, np.int64(out_cut), runs)
        self.kernels = kernels_for(self.hidden_code, self.out_code)
        self._workspaces = {}

    def initialize(self, rng: np.random.Generator) -> None:
        """scikit-learn's Glorot-uniform initialisation (factor 2 for logistic, 6 otherwise)."""
        factor = 2.0 if self.activation == "logistic" else 6.0
        for coef, intercept in zip(self.coefs, self.intercepts):
            bound = np.sqrt(factor / (coef.shape[0] + coef.shape[1]))
            coef[...] = rng.uniform(-bound, bound, coef.shape)
            intercept[...] = rng.uniform(-bound, bound, intercept.shape)

    def chunk_count(self, rows: int) -> int:
        """Row chunks a batch of ``rows`` rows is cut into; a function of the shapes only, never of threads."""
        chunks = 1
        while (2 * chunks <= MAX_CHUNKS and rows >= 2 * chunks * CHUNK_ROWS
               and (2 * chunks - 1) * self.n_params * self.dtype.itemsize <= MAX_PARTIAL_BYTES):
            chunks *= 2
        return chunks

    def splits_units(self, rows: int) -> bool:
        """Whether batches of ``rows`` rows train in unit halves (:mod:`fastbp.halves`), not in row chunks.

        A function of the shapes only, never of threads (see HALVES_MIN_UNITS).
        """
        hidden = self.layer_units[1:-1]
        return (len(hidden) > 0 and min(hidden) >= HALVES_MIN_UNITS
                and self.n_params >= HALVES_PARAMS_PER_ROW * rows)

    def parts(self, rows: int) -> int:
        """How many parts of a batch of ``rows`` rows may train side by side: unit halves or row chunks."""
        return 2 if self.splits_units(rows) else self.chunk_count(rows)

    def halves_optional(self, rows: int) -> bool:
        """Whether batches of ``rows`` rows are one chunk by the shapes that unit halves compute alike
        (:attr:`halves_exact`): they run in halves once that code is ready (see ``Trainer._schedule``)."""
        return self.halves_exact and self.parts(rows) == 1

    def side_by_side(self, rows: int) -> int:
        """How many threads batches of ``rows`` rows may train on: their :meth:`parts`, or 2 where
        :meth:`halves_optional`, so that a fit quiets BLAS for those too (``fit_scope``)."""
        return 2 if self.halves_optional(rows) else self.parts(rows)

    def halves(self, rows: int, state_rows: int):
        """The :class:`~fastbp.halves.Halves` buffers for batches of up to ``rows`` rows, allocated once and reused.

        ``state_rows``: the optimizer's state vectors (1 for SGD's velocity, 2 for Adam's moments).
        """
        key = ("halves", rows, state_rows)
        hw = self._workspaces.get(key)
        if hw is None:
            hw = self._workspaces[key] = halves.workspace(self, rows, state_rows)
        return hw

    def workspace(self, rows: int) -> Workspace:
        """The :class:`~fastbp.step.Workspace` for batches of up to ``rows`` rows, allocated once and reused.

        One row of ``acts`` / ``deltas`` / ``grads`` per chunk (:meth:`chunk_count`):
        every layer's block for the chunk's rows at offsets ``act_off``, and the
        chunk's raw gradient; the chunks' loss, weight and finiteness, and each
        update segment's ``||W||^2``, one element per chunk.
        """
        ws = self._workspaces.get(rows)
        if ws is None:
            ws = self._new_workspace(rows, self.chunk_count(rows), self.n_params)
            if len(self._workspaces) >= 4:  # a few batch sizes (fits, full-batch gradients)
                self._workspaces.pop(next(iter(self._workspaces)))
            self._workspaces[rows] = ws
        return ws

    def _new_workspace(self, rows, chunks, grad_size, backward=True) -> Workspace:
        acts, act_off = self._activation_buffer(-(-rows // chunks))
        acts = np.empty((chunks, acts.size), self.dtype)
        deltas = np.empty_like(acts) if backward else acts  # a forward pass never touches the deltas
        n_out = int(self.sizes[-1])
        return Workspace(acts, deltas, act_off, np.empty((chunks, grad_size), self.dtype),
                         np.empty(chunks), np.empty(chunks), np.empty(chunks, np.bool_), np.empty(chunks),
                         np.zeros((chunks, (-(-rows // chunks) + 1) * n_out), self.dtype))

    def _activation_buffer(self, rows):
        """A flat buffer for every layer's output on ``rows`` rows, and each layer's offset in it."""
        widths = self.sizes[1:]
        act_off = (rows * np.concatenate([[0], np.cumsum(widths)[:-1]])).astype(np.int64)
        return np.empty(rows * int(widths.sum()), self.dtype), act_off

    def forward(self, X: np.ndarray) -> np.ndarray:
        """Network output for a validated C-contiguous ``X`` of this dtype, in bounded memory."""
        out = np.empty((X.shape[0], self.layer_units[-1]), self.dtype)
        # Fresh buffers per call, not the cached workspace: predict releases the
        # GIL, and two threads predicting with one model must not share scratch memory.
        row_bytes = self.dtype.itemsize * int(self.sizes[1:].sum())
        rows = max(1, min(X.shape[0], PREDICT_CHUNK, PREDICT_BYTES // row_bytes))
        ws = self._new_workspace(rows, 1, 0, backward=False)
        flat = X.reshape(-1)
        pass_at = chunk_pass_address(self.kernels.chunk_pass, Batch(flat, flat, flat), self.layout, ws, self.params)
        finite = self.kernels.predict(self.params, self.layout, X, out, ws, rows, pass_at)
        if not finite:
            raise ValueError("the network output is not finite: X holds NaN or infinity, or the weights "
                             "overflow on it; expected finite inputs and weights")
        return out

    def loss_gradient(self, X, Y, sample_weight, alpha, grad, loss_scale=1.0) -> float:
        """Full-batch loss (:func:`~fastbp.step.objective`); the gradient is written into the flat ``grad``.

        NaN loss if not finite.
        """
        if not X.shape[0] == Y.shape[0] == sample_weight.size or grad.shape != self.params.shape:
            raise ValueError(f"X, Y and sample_weight have {X.shape[0]}, {Y.shape[0]} and {sample_weight.size} rows "
                             f"and grad shape {grad.shape}: expected equal row counts and {self.params.shape}")
        ws = self.workspace(X.shape[0])
        with chunked(ws.acts.shape[0], pool=True) as threads:
            kernel = self.kernels.loss_gradient_chunked if threads > 1 else self.kernels.loss_gradient
            batch = Batch(X.reshape(-1), Y.reshape(-1), sample_weight)
            pass_at = chunk_pass_address(self.kernels.chunk_pass, batch, self.layout, ws, self.params)
            loss = kernel(batch, self.layout, ws, self.params, Penalty(float(alpha), float(loss_scale)), pass_at)
        np.copyto(grad, ws.grads[0])
        return loss

    def loss(self, out, Y, sample_weight, alpha, loss_scale=1.0) -> float:
        """The loss (:func:`~fastbp.step.objective`) of network outputs ``out`` against targets ``Y``."""
        coefs = self.params[:self.n_coef]
        Y = Y.astype(out.dtype, copy=False)
        data_loss = loss_sum(out, Y, sample_weight, self.out_code)
        return float(objective(data_loss, float(np.dot(coefs, coefs)), float(sample_weight.sum()), alpha, loss_scale))

    def split(self, flat):
        """Per-layer ``(coef, intercept)`` views of a flat vector laid out like ``params``."""
        return ([flat[o:o + c.size].reshape(c.shape) for o, c in zip(self.coef_off, self.coefs)],
                [flat[o:o + i.size] for o, i in zip(self.icpt_off, self.intercepts)])


def gradients(coefs, intercepts, X, Y, activation="relu", out_activation="softmax", alpha=0.0, sample_weight=None):
    """Loss and exact gradients of an MLP, in scikit-learn's layout, computed by the Numba kernels.

    Parameters
    ----------
    coefs : list of ndarray
        ``coefs[i]`` of shape (n_in, n_out); consecutive layers must chain.
    intercepts : list of ndarray
        ``intercepts[i]`` of shape (n_out,).
    X : ndarray (n_samples, n_features)
    Y : ndarray (n_samples, n_outputs)
        2-D targets: one-hot for softmax, 0/1 for logistic.
    activation, out_activation : str
    alpha : float
        L2 penalty: adds ``0.5 * alpha * sum ||W||^2 / sum(sample_weight)`` (``/ n_samples`` unweighted).
    sample_weight : ndarray (n_samples,), optional

    Returns
    -------
    loss : float
        softmax → mean log loss; logistic → binary log loss, mean over samples and
        summed over outputs; identity → half the squared error, mean over samples
        and summed over outputs; exp → half the Poisson deviance; plus the L2 term.
    coef_grads, intercept_grads : list of ndarray
    """
    if not isinstance(coefs, (list, tuple)) or not isinstance(intercepts, (list, tuple)) or not coefs:
        raise TypeError("coefs and intercepts must be non-empty lists of arrays (one per layer)")
    if len(coefs) != len(intercepts):
        raise ValueError(f"got {len(coefs)} coefs but {len(intercepts)} intercepts: expected one of each per layer")
    X = check_matrix(X, "X")
    dtype = X.dtype
    coefs = [check_matrix(c, f"coefs[{i}]", dtype=dtype) for i, c in enumerate(coefs)]
    units = [coefs[0].shape[0]] + [c.shape[1] for c in coefs]
    for i, c in enumerate(coefs):
        if c.shape[0] != units[i]:
            raise ValueError(f"coefs[{i}] has shape {c.shape}: expected {units[i]} rows to chain with coefs[{i - 1}] "
                             f"of shape {coefs[i - 1].shape}")
    intercepts = [check_vector(b, f"intercepts[{i}]", length=units[i + 1], dtype=dtype,
                               length_of=f"coefs[{i}].shape[1]")
                  for i, b in enumerate(intercepts)]
    if X.shape[1] != units[0]:
        raise ValueError(f"X has shape {X.shape}: expected {units[0]} columns to match coefs[0] of shape "
                         f"{coefs[0].shape}")
    Y = check_matrix(Y, "Y", rows=X.shape[0], dtype=dtype, rows_of="X.shape[0]")
    if Y.shape[1] != units[-1]:
        raise ValueError(f"Y has shape {Y.shape}: expected {units[-1]} columns to match coefs[-1] of shape "
                         f"{coefs[-1].shape}")
    sw = check_sample_weight(sample_weight, X.shape[0], dtype)
    alpha = float(alpha)
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    net = Network(units, activation, out_activation, dtype)
    for dst, src in zip(net.coefs + net.intercepts, coefs + intercepts):
        dst[...] = src
    for name, a in (("X", X), ("Y", Y), ("coefs/intercepts", net.params)):
        if not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or infinity; expected finite values")
    grad = np.empty_like(net.params)
    loss = net.loss_gradient(X, Y, sw, alpha, grad)
    if not np.isfinite(loss):
        raise ValueError("the loss overflowed to a non-finite value; expected inputs and weights of moderate size")
    coef_grads, intercept_grads = net.split(grad)
    return float(loss), coef_grads, intercept_grads
