from __future__ import annotations

import numpy as np
import pytest

from common.stats import quantile


@pytest.mark.parametrize("q", [0.5, 0.95, 0.99, 0.0, 1.0])
def test_quantile_matches_numpy(q: float) -> None:
    values = [5.0, 1.0, 7.5, 3.3, 2.2, 9.9, 4.4]
    assert quantile(values, q) == pytest.approx(float(np.quantile(values, q)), abs=1e-12)
    assert quantile([], q) is None
    assert quantile([2.5], q) == 2.5


def test_quantile_refuses_percent() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        quantile([1.0, 2.0], 95)
