"""Property and integration tests of `oi_ml.cv`: purging, embargo, CPCV paths and walk-forward segments,
checked against brute-force O(n^2) references written here (independently of the module)."""
import itertools
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, check_cv, cross_val_score

from oi_ml.cv import CombinatorialPurgedCV, PurgedKFold, walk_forward_segments

IST = "Asia/Kolkata"


# ---------------------------------------------------------------- brute-force references (O(n^2), loops)
def overlaps(event_time, label_end_time, i, j) -> bool:
    "Closed intervals [t0_i, t1_i] and [t0_j, t1_j] share a point."
    return event_time[i] <= label_end_time[j] and event_time[j] <= label_end_time[i]


def contiguous_runs(rows):
    "Maximal runs of consecutive integers in sorted `rows`."
    runs, current = [], []
    for r in sorted(rows):
        if current and r != current[-1] + 1:
            runs.append(current)
            current = []
        current.append(r)
    return runs + ([current] if current else [])


def brute_train(event_time, label_end_time, test_rows, embargo):
    "Rows neither tested, nor overlapping a test label, nor among the first `embargo` rows after a test run that start after its last label end."
    n = len(event_time)
    test = {int(r) for r in test_rows}
    train = []
    embargoed = set()
    for run in contiguous_runs(test):
        run_end = max(label_end_time[j] for j in run)
        after = [i for i in range(run[-1] + 1, n) if event_time[i] > run_end]
        embargoed.update(after[:embargo])
    for i in range(n):
        if i in test or i in embargoed: continue
        if any(overlaps(event_time, label_end_time, i, j) for j in test): continue
        train.append(i)
    return train


def leaky_train(event_time, label_end_time, test_rows, embargo):
    "The open implementation's bug: the test window starts at the first test row's *end* time."
    start, stop = test_rows[0], test_rows[-1] + 1
    test_window_start = label_end_time[start]                    # should be event_time[start]
    test_window_end = label_end_time[start:stop].max()
    before = [i for i in range(start) if label_end_time[i] <= test_window_start]
    after = [i for i in range(stop, len(event_time)) if event_time[i] > test_window_end][embargo:]
    return before + after


def random_intervals(rng, n, max_len=8, tie_prob=0.3, long_prob=0.05):
    "Sorted event times (with ties) and label ends; a few labels are very long."
    steps = np.where(rng.random(n) < tie_prob, 0, rng.integers(1, 4, n))
    event_time = np.cumsum(steps) - steps[0]
    lengths = rng.integers(0, max_len + 1, n)
    lengths = np.where(rng.random(n) < long_prob, rng.integers(0, 4 * n + 1, n), lengths)
    return event_time.astype(np.int64), (event_time + lengths).astype(np.int64)


def random_case(seed):
    "Seeded random (n_samples, event_time, label_end_time, embargo_frac) with small n so O(n^2) references are cheap."
    rng = np.random.default_rng([20, seed])
    n = int(rng.integers(2, 46))
    event_time, label_end_time = random_intervals(rng, n)
    return n, event_time, label_end_time, float(rng.choice([0.0, 0.03, 0.1, 0.25])), rng


# ---------------------------------------------------------------- PurgedKFold
@pytest.mark.parametrize("seed", range(150))
def test_purged_kfold_equals_brute_force(seed):
    n, event_time, label_end_time, embargo_frac, rng = random_case(seed)
    n_splits = min(int(rng.integers(2, 7)), n)
    embargo = math.ceil(round(embargo_frac * n, 9))
    splits = list(PurgedKFold(n_splits, embargo_frac, label_end_times=label_end_time).split(np.zeros((n, 1)), event_times=event_time))
    assert len(splits) == n_splits
    for (train, test), expected_test in zip(splits, np.array_split(np.arange(n), n_splits)):
        assert train.dtype == np.int64 and test.dtype == np.int64
        np.testing.assert_array_equal(test, expected_test)
        np.testing.assert_array_equal(train, brute_train(event_time, label_end_time, test, embargo))


@pytest.mark.parametrize("seed", range(25))
def test_no_train_label_overlaps_a_test_label_and_embargo_holds(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(30, 200))
    event_time, label_end_time = random_intervals(rng, n, max_len=12)
    embargo_frac = float(rng.choice([0.0, 0.02, 0.05]))
    embargo = math.ceil(round(embargo_frac * n, 9))
    for train, test in PurgedKFold(5, embargo_frac, label_end_times=label_end_time).split(None, event_times=event_time):
        t0_tr, t1_tr = event_time[train][:, None], label_end_time[train][:, None]
        t0_te, t1_te = event_time[test][None, :], label_end_time[test][None, :]
        assert not ((t0_tr <= t1_te) & (t0_te <= t1_tr)).any(), "a training label overlaps a test label"
        # embargo: the first training row after the fold lies >= `embargo` rows past the last row overlapping it
        after = train[train > test[-1]]
        if after.size:
            last_overlapping = np.flatnonzero(event_time <= label_end_time[test].max()).max()
            assert after[0] >= last_overlapping + 1 + embargo
            assert after[0] >= test[-1] + 1 + embargo          # hence also >= embargo rows after the fold itself
        assert np.intersect1d(train, test).size == 0


def test_leak_case_first_test_row_end_time():
    "Rows whose labels end inside [first test event time, first test label end) must be purged."
    event_time = np.arange(30, dtype=np.int64)
    label_end_time = event_time + 5                            # every label spans 5 bars
    label_end_time[20] = 28                                    # first row of fold 3 has a longer label
    cv = PurgedKFold(3, 0.0, label_end_times=label_end_time)
    train, test = list(cv.split(None))[2]
    assert test[0] == 20
    leaky = leaky_train(event_time, label_end_time, list(test), 0)
    leaked = [i for i in leaky if any(overlaps(event_time, label_end_time, i, j) for j in test)]
    assert leaked == [15, 16, 17, 18, 19]                      # the buggy split keeps them: the check can fail
    assert not set(train) & set(leaked)
    np.testing.assert_array_equal(train, np.arange(0, 15))


def test_leak_case_on_datetimes_and_series_inputs():
    index = pd.date_range("2025-08-04 03:45", periods=30, freq="min", tz="UTC")
    X = pd.DataFrame({"feature": np.arange(30.0)}, index=index)
    ends = pd.Series(index + pd.Timedelta(minutes=5), index=index)
    positional = list(PurgedKFold(3, 0.1, label_end_times=np.arange(30) + 5).split(np.zeros((30, 1))))
    for (train, test), (train_pos, test_pos) in zip(PurgedKFold(3, 0.1, label_end_times=ends).split(X), positional):
        np.testing.assert_array_equal(train, train_pos)
        np.testing.assert_array_equal(test, test_pos)
    # naive datetimes passed to split() behave the same
    naive = list(PurgedKFold(3, 0.1).split(None, label_end_times=(index + pd.Timedelta(minutes=5)).tz_localize(None),
                                           event_times=index.tz_localize(None)))
    for (train, _), (train_pos, _) in zip(naive, positional):
        np.testing.assert_array_equal(train, train_pos)


def test_long_label_purged_from_far_earlier_row():
    "A single early row whose label reaches a later fold is purged while its neighbours stay."
    event_time = np.arange(40, dtype=np.int64)
    label_end_time = event_time + 1
    label_end_time[2] = 33                                     # row 2's label spans folds 0-3
    splits = list(PurgedKFold(4, 0.0, label_end_times=label_end_time).split(None))
    for train, test in splits[1:]:
        assert 2 not in train and 0 in train and 1 in train
    assert 2 in splits[0][1]


def test_returned_arrays_are_independent():
    cv = PurgedKFold(3, 0.0, label_end_times=np.arange(30) + 2)
    first = list(cv.split(None))
    for train, test in first:
        train[:] = -1
        test[:] = -1
    again = list(cv.split(None))
    assert all((tr >= 0).all() and (te >= 0).all() for tr, te in again)


def test_invalid_inputs_name_the_row():
    with pytest.raises(ValueError, match="row 3 .* is before row 2"):
        list(PurgedKFold(2).split(None, label_end_times=np.array([5, 5, 5, 5]), event_times=np.array([0, 1, 2, 1])))
    with pytest.raises(ValueError, match="label_end_times row 1 .* before its event time"):
        list(PurgedKFold(2).split(None, label_end_times=np.array([1, 0, 4, 5])))
    with pytest.raises(ValueError, match="row 2 is NaT"):
        list(PurgedKFold(2).split(None, label_end_times=pd.DatetimeIndex(["2025-01-01", "2025-01-02", None, "2025-01-04"])))
    with pytest.raises(ValueError, match="label_end_times is required"):
        list(PurgedKFold(2).split(np.zeros((4, 1))))
    with pytest.raises(ValueError, match="exceeds the 3 samples"):
        list(PurgedKFold(4).split(None, label_end_times=np.arange(3)))
    with pytest.raises(ValueError, match="embargo_frac"):
        PurgedKFold(3, -0.1)


def test_sklearn_cross_val_score_and_grid_search():
    rng = np.random.default_rng(3)
    n = 300
    X = rng.normal(size=(n, 4))
    y = (X[:, 0] - X[:, 1] + rng.normal(size=n) > 0).astype(int)
    cv = PurgedKFold(5, 0.02, label_end_times=np.arange(n) + rng.integers(1, 10, n))
    assert check_cv(cv) is cv and cv.get_n_splits() == 5
    scores = cross_val_score(LogisticRegression(), X, y, cv=cv)
    manual = [LogisticRegression().fit(X[tr], y[tr]).score(X[te], y[te]) for tr, te in cv.split(X)]
    np.testing.assert_allclose(scores, manual)
    search = GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, cv=cv).fit(X, y)
    assert search.n_splits_ == 5


def test_sklearn_with_datetime_labels_on_a_range_indexed_frame():
    "Labels as `oi_ml.labels` produces them (datetime Series on a RangeIndex frame), event times in the constructor."
    rng = np.random.default_rng(4)
    n = 120
    timestamps = pd.date_range("2025-08-04 03:45", periods=n, freq="min", tz="UTC")
    frame = pd.DataFrame({"f0": rng.normal(size=n), "f1": rng.normal(size=n)})
    y = (frame["f0"] + rng.normal(size=n) > 0).astype(int)
    horizon = rng.integers(1, 6, n)
    label_end_time = pd.Series(timestamps[np.minimum(np.arange(n) + horizon, n - 1)])
    cv = PurgedKFold(4, 0.02, label_end_times=label_end_time, event_times=timestamps)
    scores = cross_val_score(LogisticRegression(), frame, y, cv=cv)
    assert len(scores) == 4
    positional = PurgedKFold(4, 0.02, label_end_times=np.minimum(np.arange(n) + horizon, n - 1))
    for (train, _), (train_pos, _) in zip(cv.split(frame), positional.split(frame)):
        np.testing.assert_array_equal(train, train_pos)
    with pytest.raises(ValueError, match="event times are integer but label_end_times are datetime"):
        list(PurgedKFold(4, label_end_times=label_end_time).split(frame))


# ---------------------------------------------------------------- CombinatorialPurgedCV
@pytest.mark.parametrize("n_groups,n_test_groups", [(6, 2), (5, 1), (7, 3), (4, 3), (8, 2)])
def test_cpcv_path_count_and_coverage(n_groups, n_test_groups):
    cv = CombinatorialPurgedCV(n_groups, n_test_groups)
    combos = list(itertools.combinations(range(n_groups), n_test_groups))
    assert cv.get_n_splits() == len(combos)
    assert cv.n_paths * n_groups == n_test_groups * len(combos)    # phi = k/N * C(N, k)
    paths = cv.backtest_paths()
    assert paths.shape == (cv.n_paths, n_groups)
    for path in paths:
        for group, split in enumerate(path):
            assert group in combos[split]                          # the split really tests that group
    used = sorted((int(split), group) for path in paths for group, split in enumerate(path))
    assert used == sorted((s, g) for s, combo in enumerate(combos) for g in combo)   # every prediction used once


@pytest.mark.parametrize("seed", range(60))
def test_cpcv_splits_equal_brute_force(seed):
    n, event_time, label_end_time, embargo_frac, rng = random_case(1000 + seed)
    n_groups = int(rng.integers(3, 7))
    if n < n_groups:
        event_time, label_end_time = random_intervals(rng, n_groups)
        n = n_groups
    embargo = math.ceil(round(embargo_frac * n, 9))
    groups = np.array_split(np.arange(n), n_groups)
    cv = CombinatorialPurgedCV(n_groups, 2, embargo_frac, label_end_times=label_end_time)
    splits = list(cv.split(None, event_times=event_time))
    for (train, test), combo in zip(splits, itertools.combinations(range(n_groups), 2)):
        np.testing.assert_array_equal(test, np.concatenate([groups[g] for g in combo]))
        np.testing.assert_array_equal(train, brute_train(event_time, label_end_time, test, embargo))


def test_cpcv_path_predictions_reassemble_every_row():
    n = 97
    cv = CombinatorialPurgedCV(6, 2, label_end_times=np.arange(n) + 3)
    splits = list(cv.split(None))
    stitched = cv.path_predictions([test * 10.0 for _, test in splits], n)
    assert stitched.shape == (5, n)
    np.testing.assert_array_equal(stitched, np.tile(np.arange(n) * 10.0, (5, 1)))
    # paths differ in which split supplied each group: with split-specific offsets the rows identify the split
    offsets = cv.path_predictions([np.full(len(test), s, float) for s, (_, test) in enumerate(splits)], n)
    groups = np.array_split(np.arange(n), 6)
    for p, path in enumerate(cv.backtest_paths()):
        for g, split in enumerate(path):
            assert (offsets[p, groups[g]] == split).all()


# ---------------------------------------------------------------- walk-forward segments
def bar_index(days, bars_per_day=6):
    "UTC bar timestamps inside the IST session on each of `days`."
    return pd.DatetimeIndex([d + pd.Timedelta(hours=3, minutes=45 + 10 * k) for d in days for k in range(bars_per_day)]).tz_localize("UTC")


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("expanding", [False, True])
def test_walk_forward_purged_at_boundary_and_non_overlapping(seed, expanding):
    rng = np.random.default_rng(seed)
    days = pd.bdate_range("2025-08-01", periods=30).delete([5, 17])           # two holidays without rows
    index = bar_index(days)
    n = len(index)
    horizon = rng.integers(0, 15, n)
    label_end = index[np.minimum(np.arange(n) + horizon, n - 1)]
    window_days, step_days = int(rng.integers(3, 8)), int(rng.integers(1, 5))
    segments = walk_forward_segments(index, window_days, step_days, expanding=expanding, label_end_times=label_end)
    local_dates = index.tz_convert(IST).normalize()
    distinct = local_dates.unique()
    assert len(segments) == (len(distinct) - window_days - step_days) // step_days + 1
    for k, seg in enumerate(segments):
        # validation: exactly the step_days trading dates starting after the first window
        valid_dates = distinct[window_days + k * step_days: window_days + (k + 1) * step_days]
        np.testing.assert_array_equal(seg.valid_index, np.flatnonzero(local_dates.isin(valid_dates)))
        # training: the window's dates (or all earlier dates), minus rows whose label reaches validation
        first_train_date = 0 if expanding else window_days + k * step_days - window_days
        window = np.flatnonzero(local_dates.isin(distinct[first_train_date: window_days + k * step_days]))
        kept = [i for i in window if label_end[i] < index[seg.valid_index[0]]]
        np.testing.assert_array_equal(seg.train_index, kept)
        assert seg.n_purged == len(window) - len(kept)
        assert all(label_end[i] < seg.valid_start for i in seg.train_index)
        assert seg.train_end < seg.valid_start and seg.valid_start <= seg.valid_end
        assert seg.train_start == index[seg.train_index[0]] and seg.valid_end == index[seg.valid_index[-1]]
    for a, b in itertools.pairwise(segments):
        assert a.valid_index[-1] + 1 == b.valid_index[0]                     # contiguous, non-overlapping


def test_walk_forward_days_are_sessions_and_without_labels_nothing_is_purged():
    days = pd.bdate_range("2025-08-04", periods=10)                          # Mon 4 Aug - Fri 15 Aug
    index = bar_index(days, bars_per_day=3)
    segments = walk_forward_segments(index, window_days=5, step_days=5)
    assert len(segments) == 1 and segments[0].n_purged == 0
    assert segments[0].train_start.tz_convert(IST).day_name() == "Monday"
    assert segments[0].valid_start.tz_convert(IST).date() == pd.Timestamp("2025-08-11").date()
    np.testing.assert_array_equal(segments[0].train_index, np.arange(15))
    with pytest.raises(ValueError):
        segments[0].train_index[0] = 5                                       # read-only


def test_walk_forward_label_positions_and_errors():
    index = bar_index(pd.bdate_range("2025-08-04", periods=6), bars_per_day=4)
    ends = np.minimum(np.arange(24) + 2, 23)
    segments = walk_forward_segments(index, 2, 2, label_end_times=ends)
    assert [s.n_purged for s in segments] == [2, 2]
    with pytest.raises(ValueError, match="overlap validation windows"):
        walk_forward_segments(index, 2, 1, valid_days=2)
    with pytest.raises(ValueError, match="before its event time"):
        walk_forward_segments(index, 2, 2, label_end_times=index - pd.Timedelta(minutes=1))
    with pytest.raises(ValueError, match="widen window_days"):
        walk_forward_segments(index, 1, 1, label_end_times=np.full(24, 23))
