"""Study (not a benchmark: `make bench` runs bench/bench_*.py only): could one fused pass bring `run_backtest` within the
issue's 2x of the minimal numba loop?

`run_backtest` makes separate passes: it validates the bars and signals (one vectorised pass each), then its event-driven
kernel visits only the bars where a signal or an exit falls, then a branch-free pass marks every bar to market, then the
result frames are assembled. The idea tested here is the opposite design: ONE loop over the bars, like the reference, that
also validates every bar and signal row and writes the trade table's columns and the decision log directly, so no input is
read twice and no log is transposed. It supports only what the benchmark's workload needs (one position, fixed lots,
holding period, no sessions, no barriers, no sizing), so its time is a lower bound for a fused engine, not a candidate.

Cases, on the benchmark's market (`bench_backtest.make_market`, 1,000,000 bars) at 10 % and 0.01 % signals, each timed
against the reference in the same interleaved run: the fused pass; and the two-pass floor, oi_ml's own vectorised
validation (`_bars_valid`, `_signals_valid`) followed by the reference loop. The fused pass must produce the reference's
net equity curve. Run from the repo root: `.venv/bin/python bench/study_fused_pass.py`; writes bench/results/fused_pass.json."""
import json
import os
import sys
from pathlib import Path

import numpy as np
from numba import njit

from oi_ml.backtest import _bars_valid, _signals_valid

sys.path.insert(0, "bench")
from bench_backtest import HOLD_BARS, N_BARS, make_market, minimal_backtest  # noqa: E402  the benchmark's own market and reference
from timing import keep_freed_memory, median_ms  # noqa: E402

RESULTS = Path("bench/results/fused_pass.json")
QUANTITY, COST_RATE, MIN_CONFIDENCE, ACCOUNT = 40.0, 3e-4, 0.55, 1e10


@njit(cache=True)
def fused_pass(ts, open_, high, low, close, signal, confidence, min_confidence, hold, quantity, cost_rate, account, capacity):
    """The reference loop plus, in the same pass, validation of every bar and signal row (as `_bars_valid` and
    `_signals_valid`), the trade table's columns (7 int, 9 float rows) and a decision per signal (1 entered, 2 not)."""
    n = close.shape[0]
    equity_gross, equity_net = np.empty(n), np.empty(n)
    ints, floats, decisions = np.empty((7, capacity), np.int64), np.empty((9, capacity)), np.empty(capacity, np.int8)
    side, entry, due, realised, costs, n_trades, n_signals = 0, 0.0, -1, 0.0, 0.0, 0, 0
    ok, previous = True, ts[0] - 1
    for b in range(n):
        o, h, l, c, t, s = open_[b], high[b], low[b], close[b], ts[b], signal[b]
        ok &= (t > previous) & (l > 0.0) & (h < np.inf) & (o >= l) & (o <= h) & (c >= l) & (c <= h)
        ok &= (s >= -1) & (s <= 1) & ((s == 0) | ((confidence[b] >= 0.0) & (confidence[b] <= 1.0)))
        previous = t
        if side != 0 and b == due:
            i = n_trades - 1
            gross = (o - entry) * side * quantity
            realised += gross
            costs += cost_rate * o * quantity
            ints[2, i], ints[4, i] = t, b - due + hold
            floats[2, i], floats[5, i], floats[6, i] = o, gross, cost_rate * (entry + o) * quantity
            floats[7, i] = gross - floats[6, i]
            side = 0
        if b > 0 and signal[b - 1] != 0:
            n_signals += 1
            if side == 0 and confidence[b - 1] >= min_confidence:
                side, entry, due = signal[b - 1], o, b + hold
                costs += cost_rate * entry * quantity
                i = n_trades
                ints[0, i], ints[1, i], ints[3, i], ints[5, i], ints[6, i] = ts[b - 1], t, side, 2, 20
                floats[0, i], floats[1, i], floats[4, i], floats[8, i] = confidence[b - 1], o, o * quantity, 0.0
                floats[3, i] = close[b - 1 + hold] / close[b - 1] - 1.0 if b - 1 + hold < n else np.nan
                n_trades += 1
                decisions[n_signals - 1] = 1
            else: decisions[n_signals - 1] = 2
        equity_gross[b] = account + realised + side * quantity * (c - entry)
        equity_net[b] = equity_gross[b] - costs
    return ok, equity_gross, equity_net, ints[:, :n_trades], floats[:, :n_trades], decisions[:n_signals]


def study(signal_fraction: float) -> dict:
    "Median times (ms) and ratios to the reference of the fused pass and the two-pass floor at one signal density."
    bars, signals = make_market(N_BARS, signal_fraction=signal_fraction)
    ts = bars["timestamp"].array.asi8
    open_, high, low, close = (bars[c].to_numpy() for c in ("open", "high", "low", "close"))
    signal, confidence = signals["signal"].to_numpy(), signals["confidence"].to_numpy()
    capacity, no_volatility = int(np.count_nonzero(signal)), np.zeros(0)
    reference = lambda: minimal_backtest(open_, close, signal, confidence, MIN_CONFIDENCE, HOLD_BARS, QUANTITY, COST_RATE,
                                         ACCOUNT, capacity)
    fused = lambda: fused_pass(ts, open_, high, low, close, signal, confidence, MIN_CONFIDENCE, HOLD_BARS, QUANTITY,
                               COST_RATE, ACCOUNT, capacity)
    def two_pass():
        assert _bars_valid(ts, open_, high, low, close) and _signals_valid(signal, confidence, no_volatility)
        return reference()
    expected, got = reference(), fused()
    assert got[0], "the benchmark's market is valid"
    np.testing.assert_allclose(got[2], expected[1], rtol=0, atol=1e-3)
    assert got[3].shape[1] == len(expected[2])
    two_pass()
    ms = median_ms({"reference": reference, "fused pass": fused, "validation + reference": two_pass}, repeats=15)
    return {"signal_fraction": signal_fraction, "n_trades": len(expected[2]),
            **{f"{k} ms": round(v, 2) for k, v in ms.items()},
            **{f"{k} ratio": round(v / ms["reference"], 2) for k, v in ms.items() if k != "reference"}}


def main():
    warm = keep_freed_memory()
    rows = [study(f) for f in (0.1, 0.0001)]
    for r in rows: print(r)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"study": "fused_pass", "rows": rows, "warm_heap_mallopt": warm,
                                   "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()]}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
