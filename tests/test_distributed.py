"""A grid search on a Dask LocalCluster of two worker processes gives the sequential scores."""

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.model_selection import GridSearchCV

from fastbp import MLPClassifier
from fastbp.distributed import configure_worker

distributed = pytest.importorskip("distributed")
joblib = pytest.importorskip("joblib")


def _search():
    grid = {"hidden_layer_sizes": [(8,), (16,)], "alpha": [1e-4, 1e-2]}
    model = MLPClassifier(solver="sgd", learning_rate_init=0.05, max_iter=15, random_state=0, n_threads=1)
    return GridSearchCV(model, grid, cv=3)


def test_dask_grid_search_matches_sequential():
    X, y = make_classification(n_samples=240, n_features=10, n_informative=6, n_classes=3, random_state=0)
    sequential = _search().fit(X, y)
    from fastbp.distributed import FastbpWorkerPlugin

    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster, distributed.Client(cluster) as client:
        client.register_plugin(FastbpWorkerPlugin(n_threads=1))
        pids = set(client.run(lambda: __import__("os").getpid()).values())
        with joblib.parallel_config(backend="dask"):
            on_dask = _search().fit(X, y)
    assert len(pids) == 2
    np.testing.assert_array_equal(on_dask.cv_results_["mean_test_score"], sequential.cv_results_["mean_test_score"])
    assert on_dask.best_params_ == sequential.best_params_


def test_configure_worker_rejects_bad_thread_count():
    with pytest.raises(ValueError, match="n_threads must be a positive integer"):
        configure_worker(0)
