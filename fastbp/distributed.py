"""Running fastbp searches on a ``dask.distributed`` cluster through joblib's Dask backend.

scikit-learn's ``GridSearchCV`` / ``RandomizedSearchCV`` fan their fits out with
joblib; inside ``joblib.parallel_config(backend="dask")`` each fit becomes a
task on a Dask worker.  Two things make that efficient for fastbp:

* **One fit per core.**  Each fit runs on ``n_threads`` threads (default 1),
  BLAS and Numba's row-chunk threads alike, so ``n_workers * threads_per_worker``
  fits in flight never oversubscribe the cores.
* **Compile once per worker, not per task.**  Kernels are compiled with
  ``cache=True``; the plugin's warm-up loads (or compiles) them once when a
  worker starts, and every later task in that process reuses them.  Estimators
  travel to workers as plain parameters and, when fitted, as their arrays.

Example
-------
>>> from dask.distributed import Client, LocalCluster          # doctest: +SKIP
>>> from fastbp.distributed import FastbpWorkerPlugin           # doctest: +SKIP
>>> client = Client(LocalCluster(n_workers=2, threads_per_worker=1))  # doctest: +SKIP
>>> client.register_plugin(FastbpWorkerPlugin())                # doctest: +SKIP
>>> with joblib.parallel_config(backend="dask"):                # doctest: +SKIP
...     search.fit(X, y)
"""

from threadpoolctl import threadpool_limits

from ._threads import limit_process


def configure_worker(n_threads: int = 1, warm: bool = True) -> float:
    """Limit this process's fits to ``n_threads`` threads (BLAS and row chunks) and warm the kernels up.

    Returns the seconds the warm-up took (0 when ``warm`` is False).
    """
    if not isinstance(n_threads, int) or n_threads < 1:
        raise ValueError(f"n_threads must be a positive integer, got {n_threads!r}")
    threadpool_limits(limits=n_threads)
    limit_process(n_threads)
    if not warm:
        return 0.0
    from .warmup import warmup

    # The estimators' defaults on float64 data; other kinds of network compile on first use, once per
    # worker (or load from the cache a previous worker wrote).  Every kind: `fastbp warmup` in the image.
    return warmup(dtypes=("float64",), tasks=("multiclass",), activations=("relu",))


try:
    from distributed import WorkerPlugin
except ImportError:  # the `distributed` extra is not installed
    WorkerPlugin = object


class FastbpWorkerPlugin(WorkerPlugin):
    """A Dask worker plugin that runs :func:`configure_worker` when each worker starts."""

    name = "fastbp"

    def __init__(self, n_threads: int = 1, warm: bool = True):
        self.n_threads = n_threads
        self.warm = warm

    def setup(self, worker):
        configure_worker(self.n_threads, self.warm)
