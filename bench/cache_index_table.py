"""Which FAISS index for the cache lookup (Orhan, NeurIPS 2018)? A measured table.

Builds several FAISS indexes (Johnson et al., 2019) over the same clustered keys as
``bench/cache_speed.py`` (same generator, same seed per size) and reports, for each: build
time, index memory per key (the serialized index), the time to answer one batch of queries
(top-k search + the cache's exact re-scoring of the candidates against the float16 keys),
its speed-up over the exact chunked lookup measured in the same run, and the agreement of
the predicted class with the exact lookup. Candidates:

* ``IVF<c>,SQ8`` -- inverted file over k-means cells, 8-bit scalar-quantized codes (the
  cache's index; default cells ``sqrt(N)``), at several ``nprobe``;
* ``IVF<c>,PQ<m>x4fs`` -- product-quantized 4-bit codes scanned with SIMD (fast scan);
* ``HNSW32,SQ8`` -- a graph index over the same codes (``--hnsw``; slow to build).

    python bench/cache_index_table.py --size 1000000 --threads 1 [--hnsw] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from advimage.defend.cache_ops import class_log_sum_exp, topk_class_log_sum_exp  # noqa: E402
from cache_speed import NUM_CLASSES, clustered, timed  # noqa: E402
from common import header  # noqa: E402

from advimage.defend.cache.index import import_faiss  # noqa: E402


def build(faiss, spec: str, keys: torch.Tensor, seed: int = 0):  # noqa: ANN001, ANN201
    """A trained, filled index for ``spec`` (FAISS index_factory string, inner product)."""
    n = len(keys)
    index = faiss.index_factory(keys.shape[1], spec, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.try_extract_index_ivf(index)
    n_train = 10_000
    if ivf is not None:
        ivf.cp.niter, ivf.cp.seed = 10, seed
        n_train = max(40 * ivf.nlist, n_train)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(n, n_train), replace=False))
    index.train(keys[torch.from_numpy(sample)].float().numpy())
    for start in range(0, n, 65_536):
        index.add(keys[start:start + 65_536].float().numpy())
    return index


def set_probe(faiss, index, probe: int) -> None:  # noqa: ANN001
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.nprobe = probe
    else:
        faiss.downcast_index(index).hnsw.efSearch = probe


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--queries", type=int, default=256)
    p.add_argument("--theta", type=float, default=50.0)
    p.add_argument("--noise", type=float, default=0.1)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--hnsw", action="store_true", help="also build HNSW32,SQ8 (slow)")
    p.add_argument("--specs", default=None, help="spec:probe1/probe2;... overriding the list")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    faiss = import_faiss()
    if args.threads:
        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    n = args.size
    c = round(n ** 0.5)
    specs = [(f"IVF{c},SQ8", [16, 8, 4]), (f"IVF{4 * c},SQ8", [32, 16, 8]),
             (f"IVF{c},PQ{args.dim // 4}x4fs", [16, 8])]
    if args.hnsw:
        specs.append(("HNSW32,SQ8", [128, 64]))
    if args.specs:
        specs = [(s.split(":")[0], [int(v) for v in s.split(":")[1].split("/")])
                 for s in args.specs.split(";")]
    gen = torch.Generator().manual_seed(n)  # exactly cache_speed.py's keys and queries
    centroids = F.normalize(torch.randn(NUM_CLASSES, args.dim, generator=gen), dim=1)
    keys, labels = clustered(n, args.dim, args.noise, centroids, gen, torch.float16)
    q, _ = clustered(args.queries, args.dim, args.noise, centroids, gen, torch.float32)
    print(header(f"cache index table: {n} keys, dim {args.dim}, {args.queries} queries, "
                 f"top-{args.k}"))
    with torch.no_grad():
        t_exact, lse = timed(lambda: class_log_sum_exp(
            q, keys, labels, [args.theta], NUM_CLASSES, key_chunk=8192)[0], 2)
    ref = lse.argmax(1)
    print(f"exact: {t_exact:.3f} s per batch")
    print("| index | probe | build s | bytes/key | search+rescore s | speed-up | agreement |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    rows = []
    for spec, probes in specs:
        t0 = time.perf_counter()
        index = build(faiss, spec, keys)
        t_build = time.perf_counter() - t0
        per_key = faiss.serialize_index(index).nbytes / n
        for probe in probes:
            set_probe(faiss, index, probe)

            def approx(index=index) -> torch.Tensor:  # noqa: ANN001
                _, idx = index.search(q.numpy(), args.k)
                return topk_class_log_sum_exp(q, keys, labels, torch.from_numpy(idx),
                                              [args.theta], NUM_CLASSES)[0]

            with torch.no_grad():
                t, lse_a = timed(approx, 3)
            agree = float((lse_a.argmax(1) == ref).float().mean())
            row = dict(index=spec, probe=probe, build_s=t_build, bytes_per_key=per_key,
                       search_s=t, speedup=t_exact / t, agreement=agree)
            rows.append(row)
            print(f"| {spec} | {probe} | {t_build:.1f} | {per_key:.0f} | {t:.4f} | "
                  f"{t_exact / t:.1f} | {agree:.3f} |", flush=True)
        del index
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)},
                                        "exact_s": t_exact, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
