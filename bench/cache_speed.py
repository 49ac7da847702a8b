"""Speed and memory of the cache model's memory lookup: exact (chunked) vs FAISS top-k.

For 50k, 100k and 1M keys (``--quick``: 20k and 50k) of dimension ``--dim`` this measures
build time, key/index memory and the time to answer one batch of ``--queries`` queries
(``log p_mem`` for every class) in exact mode and in FAISS mode, plus their agreement.

Data: random unit vectors would give near-uniform similarities and meaningless "predicted
classes", so keys and queries are CLUSTERED: 10 random unit class centroids plus Gaussian
noise (``--noise`` per dimension), normalized; the query's class is the centroid it was drawn
from. Keys are generated straight into float16 in blocks (never a float32 copy of all keys).
Exact mode never holds the full similarity matrix: it works in (queries x key_chunk) blocks.

    python bench/cache_speed.py [--quick] [--threads 2] [--out runs/cache/speed.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from common import header  # noqa: E402

from advimage.defend.cache.index import FaissKeyIndex, import_faiss  # noqa: E402
from advimage.defend.cache.ops import class_log_sum_exp, topk_class_log_sum_exp  # noqa: E402

NUM_CLASSES = 10
TARGET_SPEEDUP, TARGET_AGREEMENT = 10.0, 0.99  # FAISS vs exact, per batch, at 1M keys
BLOCK = 100_000  # keys generated per block


def clustered(n: int, dim: int, noise: float, centroids: torch.Tensor, gen: torch.Generator,
              dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` unit vectors around the class centroids, in ``dtype``; labels ``(n,)``."""
    keys = torch.empty((n, dim), dtype=dtype)  # (N, D)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=gen)  # (N,)
    for start in range(0, n, BLOCK):
        lab = labels[start:start + BLOCK]
        x = centroids[lab] + noise * torch.randn(lab.numel(), dim, generator=gen)
        keys[start:start + BLOCK] = F.normalize(x, dim=1).to(dtype)
    return keys, labels


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def run_size(n: int, args: argparse.Namespace, faiss_ok: bool) -> dict:
    gen = torch.Generator().manual_seed(n)
    centroids = F.normalize(torch.randn(NUM_CLASSES, args.dim, generator=gen), dim=1)
    t0 = time.perf_counter()
    keys, labels = clustered(n, args.dim, args.noise, centroids, gen, torch.float16)
    t_keys = time.perf_counter() - t0
    q, q_labels = clustered(args.queries, args.dim, args.noise, centroids, gen, torch.float32)
    row: dict = {"keys": n, "dim": args.dim, "queries": args.queries, "theta": args.theta,
                 "key_bytes_per_dim": keys.element_size(), "keys_mb": keys.nbytes / 2**20,
                 "gen_keys_s": t_keys,
                 "exact_block_mb": args.queries * args.key_chunk * 4 / 2**20}
    reps = 1 if n >= 500_000 else args.repeats
    with torch.no_grad():
        t_exact, lse = timed(lambda: class_log_sum_exp(
            q, keys, labels, [args.theta], NUM_CLASSES, key_chunk=args.key_chunk)[0], reps)
    p_exact = torch.softmax(lse, dim=1)  # (B, K)
    row.update(exact_s=t_exact, exact_qps=args.queries / t_exact,
               exact_acc=float((p_exact.argmax(1) == q_labels).float().mean()))
    if faiss_ok:
        t0 = time.perf_counter()
        index = FaissKeyIndex(keys, nprobe=args.nprobe)
        row.update(faiss_build_s=time.perf_counter() - t0, faiss_nlist=index.nlist,
                   faiss_nprobe=index.nprobe, k=args.k,
                   index_bytes_per_dim_per_key=index.nbytes() / (n * args.dim))

        def approx() -> torch.Tensor:
            idx = index.search(q, args.k)
            return topk_class_log_sum_exp(q, keys, labels, idx, [args.theta], NUM_CLASSES)[0]

        with torch.no_grad():
            t_faiss, lse_a = timed(approx, args.repeats)
        p_a = torch.softmax(lse_a, dim=1)
        row.update(faiss_s=t_faiss, faiss_qps=args.queries / t_faiss,
                   speedup=t_exact / t_faiss,
                   agreement=float((p_a.argmax(1) == p_exact.argmax(1)).float().mean()),
                   max_abs_prob_diff=float((p_a - p_exact).abs().max()))
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="20k and 50k keys only")
    p.add_argument("--sizes", default=None, help="comma-separated key counts")
    p.add_argument("--dim", type=int, default=256, help="key dimension")
    p.add_argument("--queries", type=int, default=256, help="queries per batch")
    p.add_argument("--theta", type=float, default=50.0, help="inverse temperature")
    p.add_argument("--noise", type=float, default=0.1, help="per-dimension noise std")
    p.add_argument("--k", type=int, default=100, help="FAISS candidates per query")
    p.add_argument("--nprobe", type=int, default=16, help="IVF cells scanned per query")
    p.add_argument("--key-chunk", type=int, default=8192, help="keys per exact block")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats (median)")
    p.add_argument("--threads", type=int, default=None, help="torch and FAISS threads")
    p.add_argument("--out", type=Path, default=None, help="JSON results file")
    args = p.parse_args()
    try:
        faiss = import_faiss()
        faiss_ok = True
    except ImportError as exc:
        print(f"note: {exc}; exact mode only")
        faiss, faiss_ok = None, False
    if args.threads:
        torch.set_num_threads(args.threads)
        if faiss_ok:
            faiss.omp_set_num_threads(args.threads)
    sizes = ([int(s) for s in args.sizes.split(",")] if args.sizes else
             [20_000, 50_000] if args.quick else [50_000, 100_000, 1_000_000])
    print(header("cache memory lookup: exact vs FAISS top-k (clustered unit vectors)"))
    rows = []
    print(f"{'keys':>9} {'exact s':>8} {'faiss s':>8} {'speedup':>8} {'agree':>6} "
          f"{'max|dp|':>8} {'build s':>8} {'key B/d':>7} {'idx B/d':>7} {'rss MB':>7}")
    for n in sizes:
        r = run_size(n, args, faiss_ok)
        rows.append(r)
        print(f"{n:>9} {r['exact_s']:>8.3f} {r.get('faiss_s', float('nan')):>8.3f} "
              f"{r.get('speedup', float('nan')):>8.1f} {r.get('agreement', float('nan')):>6.3f} "
              f"{r.get('max_abs_prob_diff', float('nan')):>8.4f} "
              f"{r.get('faiss_build_s', float('nan')):>8.1f} {r['key_bytes_per_dim']:>7} "
              f"{r.get('index_bytes_per_dim_per_key', float('nan')):>7.2f} "
              f"{r['peak_rss_mb']:>7.0f}", flush=True)
    for r in rows:
        if "speedup" in r:
            ok = r["speedup"] >= TARGET_SPEEDUP and r["agreement"] >= TARGET_AGREEMENT
            print(f"{r['keys']} keys: speed-up {r['speedup']:.1f}x at agreement "
                  f"{r['agreement']:.3f} (target >= {TARGET_SPEEDUP:g}x at >= "
                  f"{TARGET_AGREEMENT:.0%}: {'met' if ok else 'NOT met'})")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)},
                                        "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
