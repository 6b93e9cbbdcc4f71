"""Unit halves: wide layers cut in two over two workers compute what the row-chunk epoch does."""

import threading

import numba
import numpy as np
import pytest
import scipy.sparse as sp

import fastbp.network as network_module
import fastbp.trainer as trainer_module
from fastbp import MLPClassifier, MLPRegressor, TrainingDivergedWarning, _threads
from fastbp._config import EPOCH_ABORTED
from fastbp.halves import Halves, _layout, unit_cut, workspace
from fastbp.network import Network

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

RNG = np.random.default_rng(7)
X = RNG.standard_normal((240, 9))
Y_CLASS = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)
Y_REG = np.column_stack([X[:, 0] * X[:, 1], np.sin(X[:, 2])])


def _weights(model):
    return [np.array(a) for a in list(model.coefs_) + list(model.intercepts_)]


def _record_halves(monkeypatch):
    """The worker counts of the trainer's calls that ran epochs in unit halves, as they are made."""
    workers = []
    schedule = trainer_module.Trainer._schedule

    def recording(self, *args):
        chosen = schedule(self, *args)
        if isinstance(chosen[1][5], Halves):  # the workspace argument
            workers.append(chosen[2])
        return chosen

    monkeypatch.setattr(trainer_module.Trainer, "_schedule", recording)
    return workers


@pytest.fixture
def halves_always(monkeypatch):
    """Every network with a hidden layer trains in halves, however narrow (the shapes below are small)."""
    monkeypatch.setattr(network_module, "HALVES_MIN_UNITS", 1)
    monkeypatch.setattr(network_module, "HALVES_PARAMS_PER_ROW", 0)
    return _record_halves(monkeypatch)


@pytest.fixture
def halves_when_ready(monkeypatch):
    """Small networks of one hidden layer are computed in the halves' order (``Network.halves_exact``) and left
    to one chunk by the shapes: they train in halves when two threads are free (their code compiled as asked)."""
    monkeypatch.setattr(network_module, "HALVES_MIN_UNITS", 1)
    monkeypatch.setattr(trainer_module, "ready", lambda dispatcher, args, type_key=None: not numba.config.DISABLE_JIT)
    return _record_halves(monkeypatch)


def _never_halves(monkeypatch):
    monkeypatch.setattr(network_module, "HALVES_MIN_UNITS", 10 ** 9)


# One hidden layer (a column layer, then the output row layer), two (layer 0 a row layer: the features are
# cut), three; widths with odd halves, a width of 1 (one half empty) and batches with a short last batch.
SHAPES = [((17,), 32), ((6, 5), 25), ((8, 1, 7), 50), ((33,), 240)]


@pytest.mark.parametrize("hidden,batch", SHAPES)
@pytest.mark.parametrize("solver,nesterov", [("sgd", False), ("sgd", True), ("adam", False)])
@pytest.mark.parametrize("classes", [3, 2])  # softmax, logistic output
def test_halves_train_what_the_chunk_epoch_trains(monkeypatch, halves_always, hidden, batch, solver, nesterov,
                                                  classes):
    def fit():
        return MLPClassifier(hidden, solver=solver, nesterovs_momentum=nesterov, batch_size=batch, max_iter=3,
                             alpha=0.01, learning_rate_init=0.01, random_state=0).fit(X, Y_CLASS % classes)

    halves = fit()
    assert halves_always, "the halves epoch never ran"
    _never_halves(monkeypatch)
    rows = fit()
    for got, want in zip(_weights(halves), _weights(rows)):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(halves.loss_curve_, rows.loss_curve_, rtol=1e-12)


# One network of one hidden layer per output activation, with hidden activations and solvers spread over them.
BITWISE_CASES = [
    (MLPClassifier, dict(activation="relu", solver="sgd"), 3, np.float32),  # softmax
    (MLPClassifier, dict(activation="relu", solver="sgd", nesterovs_momentum=False), 3, np.float64),
    (MLPClassifier, dict(activation="relu", solver="adam"), 3, np.float32),
    (MLPClassifier, dict(activation="tanh", solver="sgd"), 2, np.float32),  # logistic
    (MLPRegressor, dict(activation="logistic", solver="adam"), 0, np.float32),  # identity, with sample weights
    (MLPRegressor, dict(activation="identity", solver="sgd", loss="poisson"), 0, np.float32),  # exp
]


@pytest.mark.parametrize("estimator,settings,classes,dtype", BITWISE_CASES)
@pytest.mark.parametrize("hidden,alpha", [(17, 0.01), (33, 0.01), (33, 0.0)])  # halves of 8 and 9, 16 and 17 units;
def test_one_chunk_trains_bitwise_what_unit_halves_train(monkeypatch, halves_when_ready, estimator, settings,
                                                         classes, dtype, hidden, alpha):  # alpha 0: no norm is summed
    """So a batch of one chunk may run in either: the result never says which (see Trainer._schedule)."""
    Xd = X.astype(dtype)
    if classes:
        y, weights = Y_CLASS % classes, None
    else:
        y = np.exp(Y_REG * 0.3) if settings.get("loss") == "poisson" else Y_REG
        weights = RNG.uniform(0.5, 2.0, X.shape[0]) if settings["solver"] == "adam" else None

    def fit(n_threads):
        model = estimator(hidden_layer_sizes=(hidden,), batch_size=25, max_iter=3, alpha=alpha,
                          learning_rate_init=0.01, random_state=0, n_threads=n_threads, **settings)
        return model.fit(Xd, y, sample_weight=weights)

    one_chunk = fit(1)
    assert halves_when_ready == [] and one_chunk._network.halves_exact
    two_workers = fit(None)
    if numba.get_num_threads() > 1 and not numba.config.DISABLE_JIT:
        assert halves_when_ready and set(halves_when_ready) == {2}
    monkeypatch.setattr(network_module, "HALVES_PARAMS_PER_ROW", 0)  # the shapes choose halves: on one worker here
    one_worker = fit(1)
    assert halves_when_ready[-1] == 1
    for model in (two_workers, one_worker):
        assert all(a.dtype == dtype and np.array_equal(a, b) for a, b in zip(_weights(model), _weights(one_chunk)))
        assert model.loss_curve_ == one_chunk.loss_curve_


def test_one_chunk_of_sparse_rows_trains_bitwise_what_unit_halves_train(halves_when_ready):
    Xs = sp.csr_matrix(np.where(np.abs(X) > 0.8, X, 0.0))

    def fit(n_threads):
        return MLPClassifier((20,), batch_size=30, max_iter=2, random_state=0, n_threads=n_threads).fit(Xs, Y_CLASS)

    one_chunk, two_workers = fit(1), fit(None)
    if numba.get_num_threads() > 1 and not numba.config.DISABLE_JIT:
        assert halves_when_ready and set(halves_when_ready) == {2}
    assert all(np.array_equal(a, b) for a, b in zip(_weights(one_chunk), _weights(two_workers)))


def test_halves_wait_for_their_code_and_two_free_threads(monkeypatch):
    """Without code for the halves ready (nothing compiled or on disk), or with one thread, a batch stays one chunk."""
    monkeypatch.setattr(network_module, "HALVES_MIN_UNITS", 1)
    asked = []
    monkeypatch.setattr(trainer_module, "ready", lambda dispatcher, args, type_key=None: asked.append(args[1]) or False)
    record = _record_halves(monkeypatch)
    MLPClassifier((20,), batch_size=30, max_iter=2, random_state=0).fit(X, Y_CLASS)
    assert record == []
    if numba.get_num_threads() > 1:
        assert asked and set(asked) == {2}  # asked about two workers
    asked.clear()
    MLPClassifier((20,), batch_size=30, max_iter=2, random_state=0, n_threads=1).fit(X, Y_CLASS)
    assert asked == [] and record == []
    monkeypatch.setattr(network_module, "HALVES_MIN_UNITS", 21)  # narrower than halves take: not asked
    MLPClassifier((20,), batch_size=30, max_iter=2, random_state=0).fit(X, Y_CLASS)
    assert asked == [] and record == []


@pytest.mark.parametrize("activation,loss", [("identity", "squared_error"), ("logistic", "poisson"),
                                             ("tanh", "squared_error")])
def test_halves_regressor_activations_and_losses(monkeypatch, halves_always, activation, loss):
    y = np.exp(Y_REG * 0.3) if loss == "poisson" else Y_REG
    weights = RNG.uniform(0.5, 2.0, X.shape[0])

    def fit():
        return MLPRegressor(hidden_layer_sizes=(10, 6), activation=activation, loss=loss, batch_size=40, max_iter=2,
                            learning_rate_init=0.003, random_state=1).fit(X, y, sample_weight=weights)

    halves = fit()
    _never_halves(monkeypatch)
    rows = fit()
    for got, want in zip(_weights(halves), _weights(rows)):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("hidden", [(12,), (12, 9)])
def test_halves_on_sparse_input(monkeypatch, halves_always, hidden):
    Xs = sp.csr_matrix(np.where(np.abs(X) > 0.8, X, 0.0))

    def fit(data):
        return MLPClassifier(hidden, batch_size=30, max_iter=2, random_state=0).fit(data, Y_CLASS)

    sparse = fit(Xs)
    for got, want in zip(_weights(sparse), _weights(fit(Xs.toarray()))):
        np.testing.assert_array_equal(got, want)
    _never_halves(monkeypatch)
    for got, want in zip(_weights(sparse), _weights(fit(Xs))):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("hidden", [(16,), (16, 12)])
def test_halves_are_bitwise_the_same_on_one_and_two_threads(halves_always, dtype, hidden):
    def fit(n_threads):
        return MLPClassifier(hidden, solver="adam", batch_size=20, max_iter=2, random_state=0,
                             n_threads=n_threads).fit(X.astype(dtype), Y_CLASS)

    one, two = fit(1), fit(None)
    assert all(a.dtype == dtype and np.array_equal(a, b) for a, b in zip(_weights(one), _weights(two)))
    assert 1 in halves_always
    if numba.get_num_threads() > 1 and not numba.config.DISABLE_JIT:
        assert 2 in halves_always, "the halves never ran on two workers"


def test_halves_divergence_restores_the_weights(halves_always):
    model = MLPClassifier((8,), solver="sgd", batch_size=16, learning_rate_init=1e6, max_iter=3, random_state=0)
    with pytest.warns(TrainingDivergedWarning):
        model.fit(X * 1e3, Y_CLASS)
    assert all(np.isfinite(w).all() for w in _weights(model))


def test_a_worker_that_fails_to_start_stops_the_others_instead_of_hanging(halves_always):
    """A helper that raises before its first barrier: worker 0 gives up there, and the helper's error is raised."""
    from fastbp._config import EPOCH_DONE
    from fastbp.halves import halves_epoch_for

    if numba.config.DISABLE_JIT:
        pytest.skip("without the JIT, epochs run on one worker")
    model = MLPClassifier((8,), batch_size=16, max_iter=1, random_state=0).fit(X, Y_CLASS)
    net, opt = model._network, model._optimizer
    trainer = trainer_module.Trainer(net, opt, 16, 0.0)
    Y = model._encode_labels(Y_CLASS, net.dtype)
    rows = trainer_module._rows(X, Y, np.ones(X.shape[0], net.dtype), net.dtype)
    hw = net.halves(16, opt.state.shape[0])
    args = (np.zeros(1), rows, np.arange(X.shape[0], dtype=np.int64), 16, net.layout, hw, trainer.batch, net.params,
            opt.state, trainer._backup, opt.hyper(net.dtype), trainer.penalty, opt.t, trainer_module.ONE_EPOCH, 0)
    kernel = halves_epoch_for(net.hidden_code, net.out_code, opt.solver)
    before = net.params.copy()
    seen = []

    def epoch(worker, n_workers, sync, *rest):
        if worker == 1:
            raise RuntimeError("helper failed")
        kernel(worker, n_workers, sync, *rest)
        seen.append(sync[4])

    with _threads.LOCK, pytest.raises(RuntimeError, match="helper failed"):
        _threads.run_workers(epoch, 2, args, np.zeros(6, np.int64))
    assert seen == [EPOCH_ABORTED]
    np.testing.assert_array_equal(net.params, before)  # the halves work on copies until the epoch's end
    sync = np.zeros(6, np.int64)
    with _threads.LOCK:  # and the helpers still serve the next epoch
        _threads.run_workers(kernel, 2, args, sync)
    assert sync[4] == EPOCH_DONE and sync[5] == 1 and not np.array_equal(net.params, before)


def test_two_fits_in_two_threads_at_once(halves_always):
    results = {}

    def fit(seed):
        results[seed] = _weights(MLPClassifier((12,), batch_size=24, max_iter=2, random_state=seed).fit(X, Y_CLASS))

    threads = [threading.Thread(target=fit, args=(seed,)) for seed in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for seed in (0, 1):
        alone = _weights(MLPClassifier((12,), batch_size=24, max_iter=2, random_state=seed).fit(X, Y_CLASS))
        assert all(np.array_equal(a, b) for a, b in zip(results[seed], alone))


@pytest.mark.parametrize("n", [1, 2, 3, 31, 32, 33, 100, 128, 784])
def test_unit_cut_is_near_the_middle_and_on_cache_lines(n):
    cut = unit_cut(n)
    assert 0 <= cut <= n and abs(n - 2 * cut) <= 16
    if n >= 32:
        assert cut % 16 == 0


@pytest.mark.parametrize("sizes", [(9, 17, 3), (9, 6, 5, 3), (9, 8, 1, 7, 3), (784, 256, 128, 10)])
def test_each_parameter_belongs_to_exactly_one_half(sizes):
    net = Network(sizes, "relu", "softmax", np.float64)
    cut = np.array([unit_cut(n) for n in sizes])
    pack, copies = _layout(net.sizes, net.coef_off, net.icpt_off, cut)
    owner = np.zeros(net.n_params, int)
    for h in range(2):
        packed = np.zeros(pack[h, -1, 1], int)
        for src, dst, n, in_norm in copies[h]:
            owner[src:src + n] += 1
            packed[dst:dst + n] += 1
            assert in_norm == (src < net.n_coef) or n == 0  # the coefficients' runs, and only those
        assert (packed == 1).all()  # the packed half is filled exactly, coefficients first
        coef_runs = [(dst, n) for src, dst, n, in_norm in copies[h] if in_norm]
        assert all(dst + n <= pack[h, -1, 0] for dst, n in coef_runs)
    assert (owner == 1).all()
    assert workspace(net, 4, 1).w.shape == (2, pack[:, -1, 1].max())


def test_halves_are_chosen_by_shapes():
    mnist = Network((784, 256, 128, 10), "relu", "softmax", np.float32)
    assert mnist.splits_units(128) and mnist.parts(128) == 2
    digits = Network((64, 128, 10), "relu", "softmax", np.float32)
    assert not digits.splits_units(32) and digits.parts(32) == 1
    assert digits.halves_optional(32) and not mnist.halves_optional(128)  # mnist: halves by the shapes
    assert digits.side_by_side(32) == 2 and mnist.side_by_side(128) == 2  # digits' batches may run in halves
    assert Network((64, 100, 10), "relu", "softmax", np.float32).side_by_side(32) == 1  # never in halves
    assert not Network((64, 100, 10), "relu", "softmax", np.float32).splits_units(200)
    assert Network((64, 512, 10), "relu", "softmax", np.float32).splits_units(32)
    assert not Network((64, 10), "relu", "softmax", np.float32).splits_units(1)  # no hidden layer
