"""The estimators' numpydoc text, written once: what ``help(MLPClassifier)`` and ``help(MLPRegressor)`` show."""

PARAMETERS = """\
hidden_layer_sizes : array-like of shape (n_layers - 2,), default=(100,)
    The i-th element is the number of units in the i-th hidden layer; ``()``
    fits a linear model (no hidden layer).
activation : {'identity', 'logistic', 'tanh', 'relu'}, default='relu'
    Activation of the hidden layers.  ReLU's derivative at 0 is 0.
solver : {'lbfgs', 'sgd', 'adam'}, default='adam'
    'sgd' is stochastic gradient descent (momentum, Nesterov), 'adam' Kingma
    and Ba's optimizer, 'lbfgs' scipy's L-BFGS-B on the full batch.
alpha : float, default=0.0001
    Strength of the L2 penalty ``0.5 * alpha * sum ||W||^2 / n_samples``.
batch_size : int or 'auto', default='auto'
    Minibatch size of the stochastic solvers; 'auto' is ``min(200, n_samples)``.
learning_rate : {'constant', 'invscaling', 'adaptive'}, default='constant'
    Schedule of the 'sgd' step size: constant, ``learning_rate_init / (t + 1) **
    power_t`` after each epoch (``t`` samples seen), or divided by 5 each time
    the loss stops improving.
learning_rate_init : float, default=0.001
    Initial step size of 'sgd' and 'adam'.
power_t : float, default=0.5
    Exponent of the 'invscaling' schedule.
max_iter : int, default=200
    Epochs of the stochastic solvers, iterations of 'lbfgs'.
shuffle : bool, default=True
    Whether the rows are shuffled before each epoch ('sgd', 'adam').
random_state : int, RandomState, numpy.random.Generator or None, default=None
    Seeds the initial weights, the shuffling and the early-stopping split; a
    ``numpy.random.Generator`` is used as it is.
tol : float, default=1e-4
    The improvement of the loss (or validation score) that counts as progress.
verbose : bool, default=False
    Print the loss (and validation score) after each epoch.
warm_start : bool, default=False
    Continue from the weights of the previous fit (or from ``coefs_`` /
    ``intercepts_`` assigned before the first one) instead of re-initialising.
momentum : float, default=0.9
    Momentum of 'sgd', in [0, 1].
nesterovs_momentum : bool, default=True
    Whether 'sgd' uses Nesterov's momentum.
early_stopping : bool, default=False
    Hold out ``validation_fraction`` of the rows (stratified for single-output
    classification) and stop when their score stops improving; the best
    epoch's weights are kept.
validation_fraction : float, default=0.1
    Share of the rows held out by ``early_stopping``.
beta_1, beta_2 : float, default=0.9, 0.999
    Decay rates of Adam's first and second moment estimates, in [0, 1).
epsilon : float, default=1e-8
    Adam's numerical stability term.
n_iter_no_change : int or inf, default=10
    Epochs without ``tol`` improvement before stopping (or, with the
    'adaptive' schedule, lowering the step size).
max_fun : int, default=15000
    Maximum number of loss evaluations of 'lbfgs'.
callbacks : callable or list of callables, default=None
    fastbp's addition: each is called after every epoch with a
    :class:`fastbp.EpochInfo` (epoch, loss, learning_rate, seconds,
    validation_score, validation_loss) and stops training by returning True.
n_threads : int or None, default=None
    fastbp's addition: threads used during fit and predict (BLAS's, and
    Numba's for row chunks), restored afterwards; None leaves them as they are.
    The weights do not depend on it.
"""

ATTRIBUTES = """\
loss_ : float
    The loss of the last epoch (or of the 'lbfgs' solution).
best_loss_ : float or None
    The lowest epoch loss of 'sgd' / 'adam'; None with early stopping.
loss_curve_ : list of float
    The loss of every epoch ('sgd', 'adam').
validation_scores_ : list of float or None
    The held-out score after every epoch with early stopping (NaN for an epoch
    that diverged), else None.
validation_loss_curve_ : list of float or None
    fastbp's addition: the held-out loss after every epoch with early
    stopping, else None.
best_validation_score_ : float or None
    The best held-out score with early stopping, else None.
t_ : int
    Training samples seen by the solver, over every call.
coefs_ : list of ndarray of shape (n_units_in, n_units_out)
    The weight matrix of each layer, a view into one flat parameter vector.
intercepts_ : list of ndarray of shape (n_units_out,)
    The bias vector of each layer.
n_features_in_ : int
    Number of features seen during fit.
feature_names_in_ : ndarray of shape (n_features_in_,)
    Names of the features seen during fit, when X had string column names.
n_iter_ : int
    Epochs (or 'lbfgs' iterations) of the last fit or partial_fit call.
n_layers_ : int
    Number of layers, input and output included.
n_outputs_ : int
    Number of output units.
out_activation_ : str
    The output activation.
"""


def estimator_doc(summary: str, parameters: str, attributes: str) -> str:
    """A numpydoc class docstring: ``summary``, then the Parameters and Attributes sections."""
    indent = "    "

    def section(title, text):  # indented like the summary's continuation lines, as cleandoc expects
        lines = "".join(indent + line if line.strip() else line for line in text.splitlines(True))
        return f"{indent}{title}\n{indent}{'-' * len(title)}\n{lines}"

    return f"{summary}\n\n{section('Parameters', parameters)}\n{section('Attributes', attributes)}"
