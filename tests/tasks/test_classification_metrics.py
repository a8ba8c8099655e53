"""Classification / regression metrics against scikit-learn and scipy on random data."""

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics

from kbert.tasks.classification import metrics as m


@pytest.mark.parametrize("num_classes, seed", [(2, 0), (2, 1), (3, 2), (5, 3)])
def test_classification_metrics_match_sklearn(num_classes, seed):
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, num_classes, 200)
    # Predictions correlated with the gold labels, some classes rarer than others.
    predicted = np.where(rng.random(200) < 0.6, gold, rng.integers(0, num_classes, 200))
    got = m.classification_metrics(gold, predicted, num_classes)
    assert got["accuracy"] == pytest.approx(sklearn.metrics.accuracy_score(gold, predicted))
    expected_f1 = sklearn.metrics.f1_score(
        gold, predicted, average="binary" if num_classes == 2 else "macro")
    assert got["f1"] == pytest.approx(expected_f1, abs=1e-12)
    assert got["macro_f1"] == pytest.approx(
        sklearn.metrics.f1_score(gold, predicted, average="macro",
                                 labels=list(range(num_classes))), abs=1e-12)
    assert got["matthews_corrcoef"] == pytest.approx(
        sklearn.metrics.matthews_corrcoef(gold, predicted), abs=1e-12)


def test_absent_classes_and_constant_predictions():
    gold, predicted = np.array([0, 0, 1, 1]), np.array([0, 0, 0, 0])
    # Class 2 never occurs: scored 0 as sklearn does with zero_division=0.
    assert m.macro_f1(gold, predicted, 3) == pytest.approx(sklearn.metrics.f1_score(
        gold, predicted, average="macro", labels=[0, 1, 2], zero_division=0))
    assert m.matthews_corrcoef(gold, predicted, 2) == 0.0 == \
        sklearn.metrics.matthews_corrcoef(gold, predicted)
    assert m.binary_f1(gold, predicted) == 0.0


@pytest.mark.parametrize("seed", [0, 1])
def test_correlations_match_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, 6, 150).astype(float)  # STS-B-like scores with many ties
    predicted = gold + rng.normal(0, 1.5, 150)
    predicted[:30] = np.round(predicted[:30])  # ties on the predicted side too
    assert m.pearson(gold, predicted) == pytest.approx(
        scipy.stats.pearsonr(gold, predicted)[0], abs=1e-12)
    assert m.spearman(gold, predicted) == pytest.approx(
        scipy.stats.spearmanr(gold, predicted)[0], abs=1e-12)
    np.testing.assert_allclose(m.ranks(predicted), scipy.stats.rankdata(predicted))
    got = m.regression_metrics(gold, predicted)
    assert got["mse"] == pytest.approx(sklearn.metrics.mean_squared_error(gold, predicted))


def test_degenerate_inputs():
    assert np.isnan(m.pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    # 0.1 * 3 / 3 != 0.1 in floating point: centring alone would not find the constant.
    assert np.isnan(m.pearson([1.0, 2.0, 3.0], [0.1] * 3))
    assert np.isnan(m.spearman([1.0, 2.0, 3.0], [0.1] * 3))
    with pytest.raises(ValueError, match="same length"):
        m.accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="no examples"):
        m.pearson([], [])
