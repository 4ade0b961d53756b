"""AutoARIMA on the Tourism monthly series a cut run of ``timeseries_m3_tourism.py`` left out.

``benchmarks/timeseries_m3_tourism.py`` runs AutoARIMA last, in 8 interleaved chunks (chunk ``j``:
series ``j, j + 8, ...``); its all-series run was stopped after chunks 1 to 4 (184 of 366
Tourism monthly series; the row with ``series_scored: 184`` in ``--previous``). This runs the
remaining chunks (``--chunks``, default 4..7) with that script's own code (its ``Dataset``, the
same windows; its ``statsforecast_rows``, the same model and intervals; its scores), writing the
JSON after each chunk, and merges the two parts into the scores on all series:

- MASE and sMAPE are means over series: the merge weights each part by its series count;
- CRPS (mean weighted quantile loss) and ND are sums over all series divided by the sum of
  ``|y|``: the merge weights each part by its ``sum |y|``.

The merge arithmetic is checked on seasonal naive (cheap): its scores on the two parts, merged,
must equal its scores on all series (``merge_check``). AutoARIMA is deterministic per series (a
local model fitted to each series' own history), so the earlier chunks need no re-run.

    python benchmarks/timeseries_tourism_arima_rest.py \\
        --out benchmarks/results/timeseries_m3_tourism_tourism_arima.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _load_m3_tourism():
    spec = importlib.util.spec_from_file_location(
        "bench_m3_tourism", Path(__file__).with_name("timeseries_m3_tourism.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def merge(a: dict, na: int, da: float, b: dict, nb: int, db: float) -> dict:
    """Scores of two disjoint parts merged: MASE/sMAPE by series count, CRPS/ND by ``sum |y|``."""
    return {"MASE": (a["MASE"] * na + b["MASE"] * nb) / (na + nb),
            "sMAPE": (a["sMAPE"] * na + b["sMAPE"] * nb) / (na + nb),
            "CRPS": (a["CRPS"] * da + b["CRPS"] * db) / (da + db),
            "ND": (a["ND"] * da + b["ND"] * db) / (da + db)}


def main() -> None:
    """Run the remaining chunks and merge."""
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--previous", default=str(ROOT / "benchmarks" / "results" /
                                              "timeseries_m3_tourism.json"))
    ap.add_argument("--dataset", default="tourism_monthly")
    ap.add_argument("--chunks", default="4,5,6,7", help="chunks to run (of --num-chunks)")
    ap.add_argument("--num-chunks", type=int, default=8)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" /
                                         "timeseries_m3_tourism_tourism_arima.json"))
    args = ap.parse_args()
    from domaindiff_timeseries.metrics import seasonal_naive

    bench = _load_m3_tourism()
    prev_all = json.loads(Path(args.previous).read_text())
    prev = [r for r in prev_all["datasets"][args.dataset]["rows"]
            if r["method"] == "AutoARIMA (statsforecast)"]
    if len(prev) != 1 or "series_scored" not in prev[0]:
        raise SystemExit(f"{args.previous}: expected one cut 'AutoARIMA (statsforecast)' row "
                         f"with series_scored in datasets.{args.dataset}.rows")
    prev = prev[0]
    ns = argparse.Namespace(num_series=None, batch_size=prev_all["args"]["batch_size"],
                            seed=prev_all["args"]["seed"],
                            ref_series=prev_all["args"]["ref_series"], context={},
                            window_sampling=prev_all["args"].get("window_sampling", "window"))
    ds = bench.Dataset(args.dataset, ns, save=lambda: None)
    n, k = len(ds.wins), args.num_chunks
    todo = [int(j) for j in args.chunks.split(",")]
    done_before = sorted(i for j in range(k) if j not in todo for i in range(j, n, k))
    if len(done_before) != prev["series_scored"]:
        raise SystemExit(f"--chunks {args.chunks}: the other chunks hold {len(done_before)} "
                         f"series, the previous row scored {prev['series_scored']}")
    naive = seasonal_naive(ds.wins, ds.h, ds.m)
    # the same series as the cut run's: seasonal naive on them scores as that run reported
    same = prev.get("others_on_same_series", {}).get("seasonal naive")
    mine = bench._scores(naive, ds.target, ds.hist, ds.m, np.array(done_before))
    if same is None or max(abs(same[m] - mine[m]) for m in ("MASE", "sMAPE", "CRPS")) > 1e-6:
        raise SystemExit(f"{args.previous}: its AutoARIMA series are not chunks other than "
                         f"{args.chunks} of {k} (seasonal naive there {same}, here {mine})")
    samples = np.full((n, 11, ds.h, 1), np.nan, np.float32)
    new: list[int] = []
    seconds = 0.0
    res = {"command": "python " + " ".join(sys.argv), "dataset": args.dataset, "series": n,
           "same_series_check": {"seasonal naive, cut run": same, "seasonal naive, here": mine},
           "previous": {"file": args.previous, "series": len(done_before),
                        "scores": {m: prev[m] for m in ("MASE", "sMAPE", "CRPS", "ND")},
                        "seconds": prev["seconds"]},
           "chunks": []}
    absy = np.abs(np.nan_to_num(ds.target)).sum(axis=tuple(range(1, ds.target.ndim)))
    for j in todo:
        idx = list(range(j, n, k))
        s, sec = bench.statsforecast_rows([ds.wins[i] for i in idx], ds.h, ds.m,
                                          ["AutoARIMA"])["AutoARIMA"]
        samples[idx] = s
        new += idx
        seconds += sec
        cover = np.sort(np.array(new))
        part = bench._scores(samples, ds.target, ds.hist, ds.m, cover)
        res["chunks"].append({"chunk": j, "series": len(idx), "seconds": sec})
        res["new"] = {"series": len(cover), "scores": part, "seconds": seconds,
                      "seconds_per_series": seconds / len(cover),
                      "series_index": cover.tolist()}
        if len(cover) + len(done_before) == n:
            a_idx, b_idx = np.array(done_before), cover
            da, db = float(absy[a_idx].sum()), float(absy[b_idx].sum())
            res["all_series"] = {"method": "AutoARIMA (statsforecast)", "series": n,
                                 **merge(prev, len(a_idx), da, part, len(b_idx), db),
                                 "nfe": None, "seconds": prev["seconds"] + seconds,
                                 "samples": 11,
                                 "seconds_per_series": (prev["seconds"] + seconds) / n,
                                 "merged_from": [args.previous, "chunks " + args.chunks]}
            # the layout of timeseries_m3_tourism.py's results: its --reuse reads this row
            res["datasets"] = {args.dataset: {"series": n, "horizon": ds.h,
                                              "rows": [res["all_series"]]}}
            sn = {nm: bench._scores(naive, ds.target, ds.hist, ds.m, ix)
                  for nm, ix in (("a", a_idx), ("b", b_idx), ("all", None))}
            merged = merge(sn["a"], len(a_idx), da, sn["b"], len(b_idx), db)
            res["merge_check"] = {"method": "seasonal naive", "merged_from_parts": merged,
                                  "all_series": {m: sn["all"][m] for m in merged},
                                  "max_abs_diff": max(abs(merged[m] - sn["all"][m])
                                                      for m in merged)}
        tmp = Path(args.out).with_name("." + Path(args.out).name)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        np.save(Path(args.out).with_suffix(".samples.npy"), samples)  # (W, 11, H, 1), NaN: not run
        tmp.write_text(json.dumps(res, indent=2))
        tmp.replace(args.out)
        print(f"AutoARIMA chunk {j}: {len(idx)} series, {sec:.0f} s; new part {len(cover)} "
              f"series: {part}", flush=True)
    if "all_series" in res:
        print("all series:", {m: round(res["all_series"][m], 4)
                              for m in ("MASE", "sMAPE", "CRPS", "ND")})
        print("merge check (seasonal naive), max |diff|:", res["merge_check"]["max_abs_diff"])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
