"""PyTorch and JAX as peers, each in its users' usual form; optional (``pip install torch==2.13.0 jax``).

Both start from the numpy peer's initial weights and train the same network
with the same SGD.  PyTorch's thread count can change at run time
(``torch.set_num_threads``); XLA fixes JAX's when it starts, so JAX's is chosen
by two short subprocesses, one per count, before this process imports it.
"""

import importlib.util
import json
import os
import subprocess
import sys
from contextlib import contextmanager, nullcontext

import numpy as np

from .peers import LR, MOMENTUM, Peer
from .protocol import ALL_CORES, THREAD_COUNTS, ThreadChoice, blas_threads, child_env

# XLA's CPU flags for one thread: Eigen's matrix products and the intra-op pool.
JAX_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


class TorchLoop(Peer):
    """``nn.Sequential`` + ``optim.SGD`` + ``CrossEntropyLoss``: zero_grad, backward, step per index minibatch."""

    name = "PyTorch eager"

    def __init__(self, problem):
        super().__init__(problem)
        import torch

        self.torch, self.X = torch, torch.from_numpy(problem.X)
        self.y = torch.from_numpy(problem.y.astype(np.int64))

    @contextmanager
    def context(self, threads):
        before = self.torch.get_num_threads()
        self.torch.set_num_threads(threads)
        try:
            with blas_threads(threads):
                yield
        finally:
            self.torch.set_num_threads(before)

    def train(self, epochs, threads):
        torch, nn, p = self.torch, self.torch.nn, self.problem
        layers = []
        for W, b in p.initial_weights():
            linear = nn.Linear(*W.shape)
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
                linear.bias.copy_(torch.from_numpy(b))
            layers += [linear, nn.ReLU()]
        self.model = model = nn.Sequential(*layers[:-1])
        optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
        loss_fn = nn.CrossEntropyLoss()
        for _ in range(epochs):
            order, total = torch.randperm(len(self.X)), 0.0
            for start in range(0, len(order), p.batch):
                idx = order[start:start + p.batch]
                optimizer.zero_grad()
                loss = loss_fn(model(self.X[idx]), self.y[idx])
                loss.backward()
                optimizer.step()
                total += loss.item()

    def predict(self):
        with self.torch.no_grad():
            return self.model(self.X).argmax(dim=1).numpy()


class JaxScan(Peer):
    """``jax.jit`` of a ``lax.scan`` over an epoch's minibatches; one call per epoch, indices shuffled in numpy.

    ``lax.scan`` needs equal shapes, so the last partial minibatch is dropped
    (as ``drop_last=True`` would): 5 of 1797 digits rows, 96 of 60000.
    """

    name = "JAX jit(lax.scan)"

    def __init__(self, problem):
        super().__init__(problem)
        import jax
        import jax.numpy as jnp

        self.jax, self.jnp = jax, jnp
        self.X, self.Y = jnp.asarray(problem.X), jnp.asarray(problem.onehot())
        self.epoch = jax.jit(self._epoch)

    def _epoch(self, params, velocity, X, Y, batches):
        jax, jnp = self.jax, self.jnp

        def loss_fn(params, x, t):
            for W, b in params[:-1]:
                x = jnp.maximum(x @ W + b, 0)
            z = x @ params[-1][0] + params[-1][1]
            return -jnp.mean(jnp.sum(t * jax.nn.log_softmax(z), axis=1))

        def step(carry, idx):
            params, velocity = carry
            loss, grads = jax.value_and_grad(loss_fn)(params, X[idx], Y[idx])
            velocity = jax.tree.map(lambda v, g: MOMENTUM * v - LR * g, velocity, grads)
            return (jax.tree.map(lambda p, v: p + v, params, velocity), velocity), loss

        (params, velocity), losses = jax.lax.scan(step, (params, velocity), batches)
        return params, velocity, losses.mean()

    def context(self, threads):
        return nullcontext()  # XLA's threads were fixed when it started (see choose_jax_threads)

    def train(self, epochs, threads):
        p, rng = self.problem, np.random.default_rng(1)
        params = [tuple(self.jnp.asarray(a) for a in layer) for layer in p.initial_weights()]
        velocity = self.jax.tree.map(self.jnp.zeros_like, params)
        steps = len(p.X) // p.batch
        for _ in range(epochs):
            batches = rng.permutation(len(p.X))[:steps * p.batch].reshape(steps, p.batch)
            params, velocity, _ = self.epoch(params, velocity, self.X, self.Y, batches)
        self.params = self.jax.block_until_ready(params)

    def predict(self):
        A = self.X
        for W, b in self.params[:-1]:
            A = self.jnp.maximum(A @ W + b, 0)
        return np.asarray((A @ self.params[-1][0] + self.params[-1][1]).argmax(axis=1))


_PROBE = """import json, statistics, time
from fastbp.bench.frameworks import JaxScan
from fastbp.bench.peers import digits_problem
peer = JaxScan(digits_problem(epochs=5))
peer.train(1, 0)
times = []
for _ in range(5):
    started = time.perf_counter()
    peer.train(5, 0)
    times.append((time.perf_counter() - started) / 5)
print(json.dumps(statistics.median(times)))
"""


def choose_jax_threads() -> ThreadChoice:
    """Time JAX's digits epoch in one subprocess per thread count and set ``XLA_FLAGS`` here for the winner.

    Must run before this process imports jax; afterwards it only reports what is set.
    """
    if "jax" in sys.modules:
        one = JAX_ONE_THREAD in os.environ.get("XLA_FLAGS", "")
        return ThreadChoice(1 if one else ALL_CORES, how="fixed before this benchmark imported jax")
    one_thread = f"{os.environ.get('XLA_FLAGS', '')} {JAX_ONE_THREAD}".strip()
    medians = {}
    for n in THREAD_COUNTS:
        env = child_env(XLA_FLAGS=one_thread) if n == 1 else child_env()
        out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True)
        medians[n] = json.loads(out.stdout.strip().splitlines()[-1])
    best = min(medians, key=medians.get)
    if best == 1:
        os.environ["XLA_FLAGS"] = one_thread
    return ThreadChoice(best, medians, how="one subprocess per count (XLA fixes its threads at start), 5 x 5 epochs")
