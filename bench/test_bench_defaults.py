"""The drop-in promise: default parameters, scikit-learn's accuracy, a fraction of its time."""

from fastbp.benchmark import bench_defaults, defaults_section


def test_defaults_match_sklearn_accuracy_and_fit_digits_faster():
    res = bench_defaults(seeds=(0, 1, 2))
    print("\n" + defaults_section(res))
    for name, acc in res["accuracy"].items():
        assert acc["fastbp"] >= acc["sklearn"] - 0.01, f"{name}: fastbp {acc['fastbp']:.4f} vs {acc['sklearn']:.4f}"
    assert res["speedup"] >= 6, f"fitting digits with defaults only {res['speedup']:.1f}x faster than scikit-learn"
