"""The live score reference and training profile (domain/live_profile.py): bins equal the batch
PSI's, tags round-trip, bad tags are refused naming the field."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from domain.live_profile import (
    LiveProfileError,
    ScoreReference,
    TrainingProfile,
    score_reference,
    training_profile,
)
from domain.metrics import population_stability_index, psi_from_shares
from rollguard.usecase import load_usecase


def test_psi_from_reference_bins_equals_the_batch_psi() -> None:
    rng = np.random.default_rng(3)
    reference = rng.beta(2, 5, 4000)
    live = rng.beta(2, 3, 700)
    ref = score_reference(reference, version="4", cutoffs=("1997-06-02",))
    counts = np.bincount(ref.bin_codes(live), minlength=len(ref.shares))
    live_psi = psi_from_shares(np.asarray(ref.shares), counts / counts.sum())
    assert live_psi == pytest.approx(population_stability_index(reference, live), rel=1e-12)
    assert live_psi > 0.1


def test_score_reference_round_trips_and_as_replaced_keeps_whose_scores() -> None:
    ref = score_reference(np.linspace(0, 1, 101), version="7")
    back = ScoreReference.from_json(ref.to_json())
    assert back == ref and back.source == "gated"
    copied = back.as_replaced()
    assert copied.source == "replaced" and copied.version == "7" and copied.shares == ref.shares


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("not json", "value"),
        ('{"version": "1", "source": "gated", "edges": [0.5], "shares": [1.0], "n": 3}', "value"),
        ('{"version": "1", "source": "other", "edges": [], "shares": [1.0], "n": 3}', "source"),
        ('{"version": "1", "source": "gated", "edges": [0.6, 0.2], "shares": [0.3, 0.3, 0.4], '
         '"n": 3}', "value"),
    ],
)  # fmt: skip
def test_bad_score_reference_is_refused_naming_the_field(text: str, field: str) -> None:
    with pytest.raises(LiveProfileError, match=rf"rollguard.live.score_reference: {field}"):
        ScoreReference.from_json(text)


def test_training_profile_of_a_categorical_use_case() -> None:
    hotel = load_usecase("hotel")
    cat = hotel.categorical_features[0]
    rows = {}
    for spec in hotel.features:
        if spec.is_categorical:
            rows[spec.name] = [spec.categories[0], spec.categories[-1], None, "never-seen"]
        else:
            rows[spec.name] = [1.0, 2.0, np.nan, 4.0]
    frame = hotel.feature_frame(pd.DataFrame(rows))
    profile = TrainingProfile.from_json(training_profile(frame, hotel).to_json())
    feature = profile.feature(cat.name)
    assert feature is not None and feature.kind == "categorical"
    # feature_frame turns an unknown level into missing: 2 of 4 rows are missing.
    assert feature.shares[-1] == pytest.approx(0.5)
    bins = feature.level_bins([cat.categories[0], "brand-new"])
    assert bins.tolist() == [0, len(cat.categories), len(cat.categories) + 1]
    numeric = next(f for f in profile.features if f.kind == "numeric")
    codes = numeric.bin_codes(np.array([np.nan, 0.0, 100.0]))
    assert codes[0] == numeric.missing_bin
    assert numeric.out_of_range(np.array([0.5, 1.0, 4.0, 9.0, np.nan])).tolist() == [
        True,
        False,
        False,
        True,
        False,
    ]
