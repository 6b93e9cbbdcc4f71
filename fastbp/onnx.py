"""ONNX export of fitted fastbp models, through skl2onnx's converters for scikit-learn's MLPs.

fastbp's fitted attributes have scikit-learn's names and meanings, so each
fastbp estimator is handed to skl2onnx as the scikit-learn estimator with the
same weights: skl2onnx's MLP converters write the graph, none is written here.
Needs the ``onnx`` extra: ``pip install "fastbp[onnx]"`` (skl2onnx, onnxruntime, onnx).
"""

import numpy as np
from sklearn import neural_network as sknn
from sklearn.pipeline import Pipeline

from .estimator import MLPClassifier, MLPRegressor

# Output activations that skl2onnx's MLP converter writes (Poisson's exp is not among them).
_CONVERTIBLE_OUTPUTS = ("identity", "logistic", "softmax")


def to_onnx(model, X_sample):
    """An ``onnx.ModelProto`` computing ``model``'s predictions.

    Parameters
    ----------
    model : MLPClassifier, MLPRegressor or Pipeline
        A fitted fastbp estimator (binary, multiclass or multilabel classifier;
        squared-error regressor), or a fitted Pipeline ending in one, such as
        the ``Pipeline(StandardScaler, estimator)`` that ``fastbp train --save`` writes.
    X_sample : array-like of shape (n_samples, n_features)
        A few input rows: their dtype chooses the graph's input type (float64
        gives a double graph, anything else float32).

    Returns
    -------
    onnx.ModelProto
        Inputs ``X``; outputs ``label`` and ``probabilities`` (classifiers, as
        arrays: no ZipMap) or ``variable`` (regressors).
    """
    try:
        import skl2onnx
    except ImportError as exc:
        raise ImportError(f"fastbp.onnx needs skl2onnx: pip install \"fastbp[onnx]\" ({exc})") from None
    X_sample = np.asarray(X_sample)
    if X_sample.ndim != 2 or X_sample.shape[0] == 0:
        raise ValueError(f"X_sample has shape {X_sample.shape}: expected a 2-D array with at least one row")
    dtype = np.float64 if X_sample.dtype == np.float64 else np.float32
    if isinstance(model, Pipeline):
        twin = Pipeline([(name, _sklearn_twin(step)) for name, step in model.steps])
        last = twin.steps[-1][1]
    else:
        twin = last = _sklearn_twin(model)
    options = {id(last): {"zipmap": False}} if isinstance(last, sknn.MLPClassifier) else None
    proto = skl2onnx.to_onnx(twin, X_sample[:1].astype(dtype), options=options)
    _mend(proto, last.n_outputs_ if isinstance(last, sknn.MLPRegressor) else None)
    return proto


def _mend(proto, n_outputs):
    """Two fixes to skl2onnx's MLP graphs, in place.

    Its regressor reshapes the values to one column (wrong for several
    outputs): they get ``(-1, n_outputs)``.  Its multilabel classifier thresholds
    with ``Binarizer``, which onnxruntime implements for float32 only: a double
    graph casts the probabilities to float32 first (the 0.5 threshold is exact
    in both).
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    initializers = {init.name: init for init in graph.initializer}
    for index, node in enumerate(list(graph.node)):
        if node.op_type == "Reshape" and n_outputs is not None and node.output[0] == graph.output[0].name:
            shape = initializers[node.input[1]]
            shape.CopyFrom(numpy_helper.from_array(np.array([-1, n_outputs], np.int64), shape.name))
        if node.op_type == "Binarizer" and graph.input[0].type.tensor_type.elem_type == TensorProto.DOUBLE:
            cast = node.input[0] + "_as_float"
            graph.node.insert(index, helper.make_node("Cast", [node.input[0]], [cast], to=TensorProto.FLOAT))
            node.input[0] = cast
    dims = graph.output[0].type.tensor_type.shape.dim
    if n_outputs is not None and len(dims) == 2:
        dims[1].dim_value = n_outputs


def _sklearn_twin(step):
    """scikit-learn's estimator with ``step``'s weights, if ``step`` is a fastbp estimator; else ``step``."""
    if not isinstance(step, (MLPClassifier, MLPRegressor)):
        return step
    if not step.__sklearn_is_fitted__():
        raise ValueError(f"{type(step).__name__} is not fitted: call fit before to_onnx")
    if step.out_activation_ not in _CONVERTIBLE_OUTPUTS:
        raise ValueError(f"out_activation_ {step.out_activation_!r} (loss='poisson') has no ONNX converter in "
                         f"skl2onnx: expected one of {_CONVERTIBLE_OUTPUTS}")
    twin = (sknn.MLPClassifier if isinstance(step, MLPClassifier) else sknn.MLPRegressor)(
        hidden_layer_sizes=step.hidden_layer_sizes, activation=step.activation)
    twin.coefs_ = [np.array(c) for c in step.coefs_]
    twin.intercepts_ = [np.array(b) for b in step.intercepts_]
    for name in ("n_layers_", "n_outputs_", "out_activation_", "n_features_in_"):
        setattr(twin, name, getattr(step, name))
    if isinstance(step, MLPClassifier):
        classes = step.classes_
        if classes.dtype.kind == "f" and not np.array_equal(classes, np.round(classes)):
            raise ValueError(f"classes_ {classes!r}: skl2onnx writes float labels as integers, so fractional "
                             "labels cannot be exported; expected integer, bool or string labels")
        twin.classes_, twin._label_binarizer = classes, step._label_binarizer
    return twin
