"""scikit-learn's estimator checks: every one of them, with no expected-failure list.

The default estimators are checked (what ``check_estimator(MLPClassifier())``
runs), plus the other solvers.  Not here: ``MLPClassifier(solver="lbfgs")``,
which fails ``check_classifiers_multilabel_output_format_predict_proba`` exactly
as scikit-learn's own does: L-BFGS drives some logistic outputs to 1.0 in float64,
and that check wants probabilities strictly below 1.
"""

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks
from threadpoolctl import threadpool_limits

from fastbp import MLPClassifier, MLPRegressor

ESTIMATORS = [
    MLPClassifier(),
    MLPRegressor(),
    MLPClassifier(solver="sgd"),
    MLPRegressor(solver="sgd"),
    MLPRegressor(solver="lbfgs"),
]


@pytest.fixture(autouse=True)
def _one_blas_thread():
    # The checks' data are tiny: BLAS threads only add overhead (L-BFGS-B's many
    # small vector operations run many times slower with them on a busy machine).
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
