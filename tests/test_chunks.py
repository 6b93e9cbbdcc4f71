"""Row chunks: a batch split over threads gives the whole batch's gradient, bitwise the same on any thread count."""

import multiprocessing
import os
import subprocess
import sys

import numba
import numpy as np
import pytest
from threadpoolctl import threadpool_info

import fastbp.network as network_module
import fastbp.trainer as trainer_module
from fastbp import MLPClassifier, MLPRegressor, TrainingDivergedWarning, _threads, gradients
from fastbp.network import Network

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
NO_JIT = numba.config.DISABLE_JIT  # then barriers do not wait, so every epoch runs on one thread

RNG = np.random.default_rng(0)
X = RNG.standard_normal((700, 12))
Y_CLASS = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)


def _weights(model):
    return [np.array(a) for a in list(model.coefs_) + list(model.intercepts_)]


def _same_weights(a, b):
    return all(u.dtype == v.dtype and np.array_equal(u, v) for u, v in zip(_weights(a), _weights(b)))


def _blas_threads():
    return sorted((p["filepath"], p["num_threads"]) for p in threadpool_info() if p["user_api"] == "blas")


def test_chunk_count_depends_on_rows_and_model_size_only():
    net = Network([64, 100, 10], "relu", "softmax", np.float32)
    rows = (1, 32, 127, 128, 255, 256, 511, 512, 10 ** 6)
    assert [net.chunk_count(r) for r in rows] == [1, 1, 1, 2, 2, 4, 4, 8, 8]
    # 12.6M float64 parameters: one more gradient buffer would pass the 64 MiB bound
    assert Network([3000, 4200, 10], "relu", "softmax", np.float64).chunk_count(10 ** 6) == 1


def _problem(rows, out_activation, seed=1):
    rng = np.random.default_rng(seed)
    widths = [7, 9, 5, 4 if out_activation != "logistic" else 3]
    coefs = [rng.uniform(-1, 1, (a, b)) for a, b in zip(widths[:-1], widths[1:])]
    intercepts = [rng.uniform(-0.5, 0.5, b) for b in widths[1:]]
    Xp = rng.standard_normal((rows, widths[0]))
    if out_activation == "softmax":
        Yp = np.eye(widths[-1])[rng.integers(0, widths[-1], rows)]
    elif out_activation == "logistic":
        Yp = rng.integers(0, 2, (rows, widths[-1])).astype(float)
    else:
        Yp = rng.standard_normal((rows, widths[-1]))
    return coefs, intercepts, Xp, Yp, rng.uniform(0.2, 2.0, rows)


@pytest.mark.parametrize("rows", [200, 201, 457, 1000])  # 2, 2, 4 and 8 chunks, even and uneven splits
@pytest.mark.parametrize("activation,out_activation", [("relu", "softmax"), ("tanh", "logistic"),
                                                       ("logistic", "identity")])
def test_chunked_gradient_equals_the_one_chunk_gradient(monkeypatch, rows, activation, out_activation):
    coefs, intercepts, Xp, Yp, sw = _problem(rows, out_activation)
    assert Network([7, 9, 5, Yp.shape[1]], activation, out_activation, np.float64).chunk_count(rows) > 1
    chunked = gradients(coefs, intercepts, Xp, Yp, activation, out_activation, 0.1, sw)
    monkeypatch.setattr(network_module, "MAX_CHUNKS", 1)
    whole = gradients(coefs, intercepts, Xp, Yp, activation, out_activation, 0.1, sw)
    np.testing.assert_allclose(chunked[0], whole[0], rtol=1e-12)
    for got, want in zip(chunked[1] + chunked[2], whole[1] + whole[2]):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-14)


def test_chunked_gradient_matches_central_differences():
    coefs, intercepts, Xp, Yp, sw = _problem(457, "softmax")
    _, coef_grads, intercept_grads = gradients(coefs, intercepts, Xp, Yp, "tanh", "softmax", 0.1, sw)
    params, analytic = coefs + intercepts, coef_grads + intercept_grads
    rng, h = np.random.default_rng(2), 1e-6
    for array, grad in zip(params, analytic):
        for idx in [tuple(rng.integers(0, s) for s in array.shape) for _ in range(4)]:
            orig = array[idx]
            array[idx] = orig + h
            up = gradients(coefs, intercepts, Xp, Yp, "tanh", "softmax", 0.1, sw)[0]
            array[idx] = orig - h
            down = gradients(coefs, intercepts, Xp, Yp, "tanh", "softmax", 0.1, sw)[0]
            array[idx] = orig
            numeric = (up - down) / (2 * h)
            assert abs(numeric - grad[idx]) <= 1e-6 * max(abs(numeric), 1e-3), (idx, numeric, grad[idx])


MODELS = {
    "sgd": lambda **kw: MLPClassifier((32,), solver="sgd", batch_size=200, max_iter=4, random_state=0, **kw),
    "adam": lambda **kw: MLPClassifier((32, 16), batch_size=400, max_iter=4, random_state=0, **kw),
    "lbfgs": lambda **kw: MLPRegressor(hidden_layer_sizes=(16,), solver="lbfgs", max_iter=15, random_state=0, **kw),
}


def _fit(name, **kw):
    model = MODELS[name](**kw)
    return model.fit(X, Y_CLASS if isinstance(model, MLPClassifier) else X[:, 0] * X[:, 1])


def _pool_runs_workers():
    """Whether a chunked epoch can run on Numba's pool here: the JIT, two threads, a layer that runs them at once."""
    if NO_JIT or numba.get_num_threads() < 2:
        return False
    numba.get_num_threads()  # starts the pool, so the layer is known
    return numba.threading_layer() in ("omp", "workqueue")


@pytest.mark.parametrize("name", MODELS)
def test_weights_do_not_depend_on_the_thread_count(monkeypatch, name):
    used, pooled = [], []
    chunk_threads = _threads.chunk_threads
    monkeypatch.setattr(_threads, "chunk_threads",
                        lambda n, pool=False: used.append(chunk_threads(n, pool)) or used[-1])
    pool_epoch = trainer_module._pool_epoch
    monkeypatch.setattr(trainer_module, "_pool_epoch", lambda *args: pooled.append(args[1]) or pool_epoch(*args))
    models = [_fit(name, n_threads=n) for n in (1, 2, None)]
    assert _same_weights(models[0], models[1]) and _same_weights(models[0], models[2])
    assert 1 in used
    if numba.get_num_threads() > 1 and not NO_JIT:
        assert max(used) > 1, "the chunks never ran on several threads"
    if name != "lbfgs" and _pool_runs_workers():  # (L-BFGS's full-batch gradients have their own prange)
        assert pooled and set(pooled) == {2}, "the chunked epochs never ran on Numba's pool"


def _stochastic_args(model, batch):
    """What a Trainer passes a chunked epoch for ``model`` (fitted) on batches of ``batch`` rows of X."""
    net, opt = model._network, model._optimizer
    trainer = trainer_module.Trainer(net, opt, batch, model.alpha)
    Y = model._encode_labels(Y_CLASS, net.dtype)
    rows = trainer_module._rows(X, Y, np.ones(X.shape[0], net.dtype), net.dtype)
    order = np.arange(X.shape[0], dtype=np.int64)
    ws = net.workspace(batch)
    return (np.zeros(1), rows, order, batch, net.layout, ws, trainer.batch, net.params, opt.state, trainer._backup,
            opt.hyper(net.dtype), trainer.penalty, opt.t, trainer_module.ONE_EPOCH, trainer._chunk_pass_address(ws))


@pytest.mark.skipif(NO_JIT, reason="without the JIT nothing runs on the pool")
def test_pool_workers_run_one_after_another_give_up_without_touching_the_weights():
    """A pool that runs a chunked epoch's two workers on one thread, one after the other, would leave the first
    waiting at its first barrier for ever: the roll call gives up instead, before anything but scratch space is
    written, and says so (``EPOCH_ABORTED``)."""
    from fastbp._config import EPOCH_ABORTED, EPOCH_DONE
    from fastbp.step import _pool_epoch, epoch_for

    model = _fit("adam")
    net = model._network
    args = _stochastic_args(model, 400)
    epoch = epoch_for(net.hidden_code, net.out_code, model._optimizer.solver, True)
    before = [net.params.copy(), model._optimizer.state.copy()]
    for threads, status in ((1, EPOCH_ABORTED), (2, EPOCH_DONE)):
        if threads > numba.get_num_threads():
            continue
        sync = np.zeros(6, np.int64)
        address = trainer_module.native_address(epoch, (-1, 2, sync, *args))
        available = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            _pool_epoch(address, 2, sync, *args)  # two workers on a pool of ``threads`` threads
        finally:
            numba.set_num_threads(available)
        assert sync[4] == status
        if status == EPOCH_ABORTED:
            assert np.array_equal(net.params, before[0]) and np.array_equal(model._optimizer.state, before[1])
        else:
            assert not np.array_equal(net.params, before[0])


@pytest.mark.skipif(NO_JIT or numba.get_num_threads() < 2, reason="needs the JIT and two threads")
def test_a_pool_that_gave_up_gives_way_to_helper_threads(monkeypatch):
    """After a roll call gave up, the epoch runs again on run_workers' threads, and so does every later one."""
    want = _fit("adam", n_threads=1)
    monkeypatch.setattr(_threads, "_pool_unusable", False)
    monkeypatch.setattr(_threads, "_side_by_side", True)
    monkeypatch.setattr(trainer_module, "CALL_SECONDS", 0.0)  # one epoch per call: one helper call per epoch
    pool_epoch, pooled, helped = trainer_module._pool_epoch, [], []
    run_workers = _threads.run_workers

    def one_thread_pool(address, n_workers, sync, *args):  # both workers on one thread of the pool
        pooled.append(n_workers)
        available = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            pool_epoch(address, 2, sync, *args)
        finally:
            numba.set_num_threads(available)

    monkeypatch.setattr(trainer_module, "_pool_epoch", one_thread_pool)
    monkeypatch.setattr(trainer_module, "run_workers",
                        lambda kernel, n, args, sync=None: helped.append(n) or run_workers(kernel, n, args, sync))
    got = _fit("adam")
    assert pooled == [2] and len(helped) == got.n_iter_ and _threads._pool_unusable
    assert _same_weights(want, got)


def test_blas_thread_counts_are_restored_after_chunked_fits():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=2, user_api="blas"):  # not 1: setting one thread for the epoch must be undone
        before = _blas_threads()
        _fit("adam")
        with pytest.warns(TrainingDivergedWarning):
            MLPClassifier((32,), solver="sgd", batch_size=200, learning_rate_init=1e6,
                          random_state=0).fit(X * 1e3, Y_CLASS)
        assert _blas_threads() == before


_IDLE_POOLS_CHILD = """
import os, sys, numpy as np
from threadpoolctl import threadpool_info
from fastbp import MLPClassifier
tasks = lambda: set(os.listdir("/proc/self/task"))
A = np.random.default_rng(0).standard_normal((300, 300))
A @ A  # numpy's OpenBLAS threads now spin, waiting for more work
before = tasks() - {str(os.getpid())}
seen = []
def during(info):
    seen.append((tasks(), sorted(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")))
X = np.random.default_rng(1).standard_normal((700, 12)); y = (X[:, 0] > 0).astype(int)
MLPClassifier(HIDDEN, batch_size=BATCH, max_iter=2, callbacks=[during]).fit(X, y)
counts = sorted(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")
print(bool(before), all(not (before & t) for t, _ in seen), all(set(c) == {1} for _, c in seen), counts == sorted(
    p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"))
"""


_NEEDS_BLAS_THREADS = pytest.mark.skipif(
    not os.path.isdir("/proc/self/task") or numba.get_num_threads() < 2 or NO_JIT,
    reason="needs Linux's /proc and two threads, and the JIT (without it everything runs on one)")


def _child_prints(script):
    """What ``script`` prints in a fresh process (its BLAS pools untouched by the tests before), split."""
    if not any(p["user_api"] == "blas" and p["internal_api"] == "openblas" and p["num_threads"] > 1
               for p in threadpool_info()):
        pytest.skip("no threaded OpenBLAS")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         check=False, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert out.returncode == 0, out.stderr  # check=True would hide the child's traceback
    return out.stdout.split()


@_NEEDS_BLAS_THREADS
@pytest.mark.parametrize("hidden,batch", [((16,), 200), ((128,), 32)])  # row chunks; one chunk that halves may run
def test_chunked_fit_stops_idle_blas_threads_and_restores_them(hidden, batch):
    """The BLAS threads that spun before a chunked fit (or one whose batches may run in unit halves:
    ``Network.side_by_side``) are gone while it trains, and BLAS runs on one thread."""
    script = _IDLE_POOLS_CHILD.replace("HIDDEN", repr(hidden)).replace("BATCH", str(batch))
    assert _child_prints(script) == ["True"] * 4


_STOPPED_POOLS_CHILD = """
import os, numpy as np
from threadpoolctl import threadpool_info
from fastbp import MLPClassifier
tasks = lambda: set(os.listdir("/proc/self/task"))
counts = lambda: sorted(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")
A = np.random.default_rng(0).standard_normal((300, 300))
X = np.random.default_rng(1).standard_normal((700, 12)); y = (X[:, 0] > 0).astype(int)
before = counts()
MLPClassifier((16,), batch_size=200, max_iter=2).fit(X, y)  # chunked: stops the idle BLAS pools
stopped = tasks()
seen = []
MLPClassifier((16,), batch_size=200, max_iter=2, n_threads=1, callbacks=[lambda info: seen.append(tasks())]).fit(X, y)
after = tasks()
B = A @ A  # the next threaded product starts numpy's pool again, and computes what it should
print(before == counts(), bool(seen) and all(t == stopped for t in seen), after == stopped, len(tasks()) > len(after),
      np.allclose(B, np.einsum("ij,jk->ik", A, A)))
"""


@_NEEDS_BLAS_THREADS
def test_setting_blas_threads_leaves_a_stopped_pool_stopped():
    """After a chunked fit stopped the BLAS pools, setting and restoring counts (n_threads, the fit's end) starts
    no thread: new pool threads would spin beside the next fit for 0.1 s (a one-thread fit took twice its time)."""
    assert _child_prints(_STOPPED_POOLS_CHILD) == ["True"] * 5


def test_a_blas_without_the_pool_variables_is_set_through_its_own_function():
    calls = []

    class Library:  # no dynlib to read blas_server_avail and blas_cpu_number from
        pass

    put = _threads._leaving_a_stopped_pool_stopped(Library(), calls.append)
    put(3)
    assert calls == [3]


def test_process_limit_keeps_chunks_on_one_thread():
    try:
        _threads.limit_process(1)
        assert _threads.chunk_threads(8) == 1
    finally:
        _threads.limit_process(None)
    assert _threads.chunk_threads(1) == 1


def _fit_weights_in_child(name):
    return _weights(_fit(name)), _threads.chunk_threads(2, pool=True), _threads.chunk_threads(2)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork on this platform")
def test_forked_child_of_a_threaded_parent_trains_with_its_own_workers():
    """Numba's pool, which GNU OpenMP cannot reuse after a fork, stays on one thread; the epoch's own workers do not."""
    _fit("lbfgs")  # its full-batch gradients start Numba's thread pool here
    parent = _fit("adam")
    with multiprocessing.get_context("fork").Pool(1) as pool:
        weights, pool_threads, epoch_threads = pool.apply_async(_fit_weights_in_child, ("adam",)).get(timeout=120)
    assert pool_threads == 1
    assert epoch_threads == (1 if NO_JIT else min(2, numba.get_num_threads()))
    assert all(np.array_equal(a, b) for a, b in zip(weights, _weights(parent)))


@pytest.mark.parametrize("solver,nesterov", [("sgd", False), ("sgd", True), ("adam", False)])
@pytest.mark.parametrize("rows,batch", [(700, 200), (803, 800)], ids=["2-chunks", "8-chunks-short-tail"])
def test_chunked_training_equals_one_chunk_training(monkeypatch, solver, nesterov, rows, batch):
    """Every chunk's gradient enters every step: the trained weights equal those of unsplit batches."""
    Xr = np.random.default_rng(3).standard_normal((rows, 12))
    yr = (Xr[:, 0] > 0).astype(int) + (Xr[:, 1] > 0.5)

    def fit():
        return MLPClassifier((16,), solver=solver, nesterovs_momentum=nesterov, batch_size=batch, max_iter=3,
                             random_state=0, learning_rate_init=0.01).fit(Xr, yr)

    chunked = fit()
    assert chunked._network.chunk_count(batch) > 1
    monkeypatch.setattr(network_module, "MAX_CHUNKS", 1)
    whole = fit()
    for got, want in zip(_weights(chunked), _weights(whole)):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(chunked.loss_curve_, whole.loss_curve_, rtol=1e-12)


@pytest.mark.parametrize("solver,nesterov", [("sgd", False), ("sgd", True), ("adam", False)])
def test_one_chunk_epoch_equals_the_general_epoch(monkeypatch, solver, nesterov):
    """Batches of one chunk run a leaner compiled epoch (no chunk sums): it computes what the general one does.

    To rounding, not bitwise: fastmath lets LLVM contract ``a * b + c`` into fused
    multiply-adds differently in each compiled copy.  (The choice of copy depends
    on the batch size alone, so results still do not depend on the thread count.)
    """

    def fit():
        return MLPClassifier((16,), solver=solver, nesterovs_momentum=nesterov, batch_size=50, max_iter=3,
                             random_state=0, learning_rate_init=0.01).fit(X, Y_CLASS)

    lean = fit()
    general, calls = trainer_module.epoch_for, []

    def always_general(hidden, out, solver_code, chunked):
        calls.append(chunked)
        return general(hidden, out, solver_code, True)

    monkeypatch.setattr(trainer_module, "epoch_for", always_general)
    general_fit = fit()
    assert calls and not any(calls)  # every batch was one chunk, and the general epoch ran them
    for got, want in zip(_weights(lean), _weights(general_fit)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(lean.loss_curve_, general_fit.loss_curve_, rtol=1e-13)


_SHARED_CHUNK_PASS_CHILD = """
import numpy as np
from fastbp import MLPClassifier
X = np.random.default_rng(0).standard_normal((700, 12))
y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)
model = MLPClassifier((6,), activation="tanh", batch_size=50, max_iter=1).fit(X, y)  # one-chunk epoch
model.predict(X)
MLPClassifier((6,), activation="tanh", batch_size=300, max_iter=1).fit(X, y)  # chunked epoch
print([str(s[4]) for s in model._network.kernels.chunk_pass.signatures])
"""


@pytest.mark.skipif(NO_JIT, reason="without the JIT nothing is compiled")
def test_training_and_predict_share_one_compiled_chunk_pass(tmp_path):
    """The epochs call the chunk pass with the argument types predict does: one compilation, not one per caller.

    In a child with an empty cache: a caller loaded from the cache never compiles its callees in-process.
    """
    out = subprocess.run([sys.executable, "-c", _SHARED_CHUNK_PASS_CHILD], capture_output=True, text=True,
                         timeout=300, check=True,
                         env={**os.environ, "PYTHONPATH": os.getcwd(), "NUMBA_CACHE_DIR": str(tmp_path)})
    assert out.stdout.split("\n")[-2] == "['Batch(array(float64, 1d, C) x 3)']", out.stdout + out.stderr


def _fit_in_child_while_a_thread_holds_the_lock():
    return _weights(_fit("sgd", n_threads=2)), _weights(_fit("adam"))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork on this platform")
def test_fork_while_another_thread_holds_the_thread_lock_does_not_hang_the_child():
    import threading

    held, release = threading.Event(), threading.Event()

    def hold():
        with _threads.LOCK:
            held.set()
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        held.wait(10)
        with multiprocessing.get_context("fork").Pool(1) as pool:
            sgd, adam = pool.apply_async(_fit_in_child_while_a_thread_holds_the_lock).get(timeout=120)
    finally:
        release.set()
        holder.join()
    assert all(np.array_equal(a, b) for a, b in zip(sgd, _weights(_fit("sgd"))))
    assert all(np.array_equal(a, b) for a, b in zip(adam, _weights(_fit("adam"))))
