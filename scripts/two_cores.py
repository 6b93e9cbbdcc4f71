"""Whether this machine's second core is there for fastbp: digits fits on two threads against one, alternating.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python scripts/two_cores.py [--seconds 90]

Fits the benchmark's digits network (64-128-10, batch 32, SGD momentum 0.9, float32, 20 epochs) with
``n_threads=None`` (unit halves on two cores, once their code is compiled: this script waits for that) and
``n_threads=1`` (one chunk on one core), back to back for ``--seconds``, and prints both medians in ms per
epoch, how often the two-thread fit was the slower, and the two-thread times over the run in tenths, so
that stretches in which the host lends the second core to someone else show as runs of slower fits.
"""

import argparse
import statistics
import time
import warnings

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=90.0, help="how long to alternate (default 90)")
    seconds = parser.parse_args().seconds

    from fastbp import _background
    from fastbp.bench.peers import FastbpFit, digits_problem

    warnings.simplefilter("ignore")
    peer = FastbpFit(digits_problem())

    def per_epoch(threads):
        call = peer.call(threads)
        with call.context():
            started = time.perf_counter()
            call.run()
            return (time.perf_counter() - started) / call.units * 1e3

    per_epoch(2)  # compiles one chunk, and starts the halves' compile in another process
    if not _background.wait(600):
        raise SystemExit("the halves' background compile did not finish in 600 s")
    per_epoch(2)  # both schedules once more, untimed: the halves' code loaded, one thread's set up
    per_epoch(1)
    pairs, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        pairs.append((per_epoch(2), per_epoch(1)))
    two, one = np.array(pairs).T
    print(f"{len(pairs)} pairs of 20-epoch fits in {seconds:g} s, ms/epoch median (min-max):")
    print(f"  2 threads {statistics.median(two):.2f} ({two.min():.2f}-{two.max():.2f})")
    print(f"  1 thread  {statistics.median(one):.2f} ({one.min():.2f}-{one.max():.2f})")
    print(f"  2 threads slower than 1 in {np.mean(two > one):.0%} of the pairs")
    tenths = [statistics.median(part) for part in np.array_split(two, 10)]
    print("  2 threads by tenth of the run: " + " ".join(f"{t:.2f}" for t in tenths))


if __name__ == "__main__":
    main()
