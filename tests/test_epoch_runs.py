"""Runs of epochs in one compiled call (fastbp.trainer.run_epochs, Trainer.epochs): bitwise one call per epoch."""

import signal
import warnings

import numba
import numpy as np
import pytest

import fastbp.trainer as trainer_module
from fastbp import MLPClassifier, MLPRegressor, TrainingDivergedWarning
from fastbp.step import Plan

NO_JIT = numba.config.DISABLE_JIT
RNG = np.random.default_rng(3)
X = RNG.standard_normal((450, 9)).astype(np.float32)
Y_CLASS = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(int) + (X[:, 3] > 1)


def _fit(one_per_call, monkeypatch, model, call_seconds=10.0):
    calls = []
    epochs = trainer_module.Trainer.epochs

    def spy(self, X, Y, sample_weight, order, plan):
        calls.append(plan.epochs)
        return epochs(self, X, Y, sample_weight, order, plan)

    with monkeypatch.context() as patch:
        patch.setattr(trainer_module.Trainer, "epochs", spy)
        if one_per_call:
            patch.setattr(trainer_module, "_several_epochs", lambda trainer: False)
        else:
            patch.setattr(trainer_module, "CALL_SECONDS", call_seconds)  # 0: compiled, one epoch per call
        y = Y_CLASS if isinstance(model, MLPClassifier) else X[:, 0] * X[:, 4] * (30 if model.solver == "sgd" else 1)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            model.fit(X, y)
    diverged = [w for w in seen if issubclass(w.category, TrainingDivergedWarning)]
    return model, calls, bool(diverged)


CASES = {
    "adam, two row chunks": lambda: MLPClassifier((16,), batch_size=200, max_iter=25, random_state=0),
    "adam, stops on the rule": lambda: MLPClassifier((16,), batch_size=64, tol=1e-2, max_iter=200, random_state=1),
    "sgd, one chunk": lambda: MLPRegressor(hidden_layer_sizes=(8, 5), solver="sgd", batch_size=7, max_iter=12,
                                           random_state=2),
    "sgd, no shuffle": lambda: MLPClassifier((6,), solver="sgd", shuffle=False, batch_size=50, max_iter=15,
                                             activation="tanh", random_state=0),
    "sgd diverges": lambda: MLPRegressor(hidden_layer_sizes=(6,), solver="sgd", learning_rate_init=0.02,
                                         batch_size=30, max_iter=30, random_state=0),  # after 6 epochs
}


@pytest.mark.parametrize("call_seconds", [10.0, 0.0])
@pytest.mark.parametrize("case", CASES)
def test_runs_of_epochs_are_bitwise_one_call_per_epoch(monkeypatch, case, call_seconds):
    """After a first call of one epoch, the rest in one call (10 s) or in compiled calls of one epoch each (0 s)."""
    one, one_calls, one_diverged = _fit(True, monkeypatch, CASES[case]())
    run, run_calls, run_diverged = _fit(False, monkeypatch, CASES[case](), call_seconds)
    assert one_diverged == run_diverged == (case == "sgd diverges")
    assert set(one_calls) == {1}
    if not NO_JIT and run.n_iter_ > 2 and call_seconds:
        assert max(run_calls) > 1, "no call ran several epochs"
    for a, b in zip(one.coefs_ + one.intercepts_, run.coefs_ + run.intercepts_):
        assert np.array_equal(a, b)
    assert one.loss_curve_ == run.loss_curve_ and getattr(one, "loss_", None) == getattr(run, "loss_", None)
    assert (one.n_iter_, one.t_, one.best_loss_, one._no_improvement_count, one._optimizer.t) == (
        run.n_iter_, run.t_, run.best_loss_, run._no_improvement_count, run._optimizer.t)
    assert np.array_equal(one._optimizer.state, run._optimizer.state)
    assert repr(one._rng.bit_generator.state) == repr(run._rng.bit_generator.state)
    if case == "adam, stops on the rule":
        assert run.n_iter_ < 200
    if case == "sgd diverges":
        assert 2 < run.n_iter_ < 30 and all(np.isfinite(c).all() for c in run.coefs_)


@pytest.mark.parametrize("kw", [{"early_stopping": True}, {"learning_rate": "invscaling", "solver": "sgd"},
                                {"learning_rate": "adaptive", "solver": "sgd"}, {"callbacks": [lambda info: False]}])
def test_what_needs_python_between_epochs_runs_one_epoch_per_call(monkeypatch, kw):
    callbacks = kw.pop("callbacks", None)
    model = MLPClassifier((6,), max_iter=4, batch_size=50, random_state=0, **kw)
    if callbacks:
        model.set_params(callbacks=callbacks)
    _, calls, _ = _fit(False, monkeypatch, model)
    assert set(calls) == {1}


@pytest.mark.skipif(NO_JIT or not hasattr(signal, "setitimer"), reason="runs of epochs need the JIT; POSIX timers")
@pytest.mark.parametrize("batch_size", [50, 200])  # one row chunk; two (on Numba's pool with two cores)
def test_a_ctrl_c_during_a_run_keeps_the_counts_with_the_weights(monkeypatch, batch_size):
    """Python answers Ctrl-C only once the compiled run returns: its epochs are counted before the interrupt."""
    kw = dict(hidden_layer_sizes=(8,), batch_size=batch_size, tol=0.0, n_iter_no_change=10**6, random_state=0)
    MLPClassifier(max_iter=2, **kw).fit(X, Y_CLASS)  # compiled before the timer starts
    monkeypatch.setattr(trainer_module, "CALL_SECONDS", 30.0)  # after a first epoch, one call of all the rest
    previous = signal.signal(signal.SIGALRM, signal.default_int_handler)  # the alarm acts as a Ctrl-C
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.warns(UserWarning, match="interrupted by user"):
            model = MLPClassifier(max_iter=10**6, **kw).fit(X, Y_CLASS)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert 1 < model.n_iter_ < 10**6 and len(model.loss_curve_) == model.n_iter_
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_iter reached
        again = MLPClassifier(max_iter=model.n_iter_, **kw).fit(X, Y_CLASS)
    for a, b in zip(model.coefs_ + model.intercepts_, again.coefs_ + again.intercepts_):
        assert np.array_equal(a, b)
    assert (model.t_, model._optimizer.t, model.loss_curve_) == (again.t_, again._optimizer.t, again.loss_curve_)
    assert np.array_equal(model._optimizer.state, again._optimizer.state)
    assert repr(model._rng.bit_generator.state) == repr(again._rng.bit_generator.state)


def test_a_trainer_checks_the_plan():
    model = MLPClassifier((6,), max_iter=2, random_state=0).fit(X, Y_CLASS)
    net = model._network
    trainer = trainer_module.Trainer(net, model._optimizer, 50, 0.0)
    Y = model._encode_labels(Y_CLASS, net.dtype)
    losses, error = trainer.epochs(X, Y, np.ones(len(X), net.dtype), np.arange(len(X), dtype=np.int64),
                                   Plan(3, 0, 0, 0, 0.0, 10.0, float("inf"), 0))
    assert error is None and len(losses) == 3 and all(np.isfinite(losses))


def test_a_trainer_on_unit_halves_runs_several_epochs_a_call():
    model = MLPClassifier((128,), max_iter=1, batch_size=2, random_state=0).fit(X[:20], Y_CLASS[:20])
    net = model._network
    trainer = trainer_module.Trainer(net, model._optimizer, 2, 0.0)  # 1.6k parameters >= 512 per row: halves
    assert trainer._halves
    Y = model._encode_labels(Y_CLASS[:20], net.dtype)
    losses, error = trainer.epochs(X[:20], Y, np.ones(20, net.dtype), np.arange(20, dtype=np.int64),
                                   Plan(3, 0, 0, 0, 0.0, 10.0, float("inf"), 0))
    assert error is None and len(losses) == 3 and all(np.isfinite(losses))


@pytest.mark.skipif(NO_JIT, reason="the compiled shuffle needs the JIT")
@pytest.mark.parametrize("bit_generator", [np.random.PCG64, np.random.MT19937, np.random.Philox, np.random.SFC64])
def test_the_compiled_shuffle_is_numpys(bit_generator):
    from fastbp._config import jit
    from fastbp.loops import shuffle

    run = jit(lambda order, a, b, c: shuffle(order, a, b, c))
    for n in (1, 2, 3, 31, 1000, 70001):
        ours, theirs = np.random.Generator(bit_generator(n)), np.random.Generator(bit_generator(n))
        ours.random(3), theirs.random(3)
        ours.integers(9, size=1, dtype=np.uint32), theirs.integers(9, size=1, dtype=np.uint32)  # a buffered half
        draws = trainer_module._draws(ours)
        a, b = np.arange(n, dtype=np.int64), np.arange(n, dtype=np.int64)
        for _ in range(2):
            run(a, *draws)
            theirs.shuffle(b)
            assert np.array_equal(a, b)
        assert repr(ours.bit_generator.state) == repr(theirs.bit_generator.state)
        assert ours.integers(1 << 40) == theirs.integers(1 << 40)
