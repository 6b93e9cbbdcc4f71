"""The drop-in promise: ``MLPClassifier()`` with its defaults, scikit-learn's accuracy, a fraction of its time."""

from fastbp.bench import report
from fastbp.bench.cases import defaults_accuracy, defaults_case
from fastbp.bench.run import Size

SIZE = Size()


def test_defaults_fit_digits(target):
    comp = defaults_case(SIZE.rounds, SIZE.seeds)
    print("\n" + report.calls_section("defaults", "", comp, [("scikit-learn / fastbp", "scikit-learn", "fastbp")]))
    target({"defaults": comp}, "defaults/accuracy")
    target({"defaults": comp}, "defaults/scikit-learn")


def test_defaults_accuracy_elsewhere():
    for name, acc in defaults_accuracy(seeds=SIZE.seeds).items():
        assert acc["fastbp"] >= acc["scikit-learn"] - 0.01, f"{name}: {acc}"
