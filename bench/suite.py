"""`make bench`: in one run on one machine, the bare pipeline, the fleet on PostgreSQL + Redis, the
fleet on the embedded default (SQLite + SQLite broker) and the baseline service (one FastAPI +
PyTorch eager process, bench/baseline/); writes bench/results/bench-<time>.json with every
measurement, the ratios issue 9 sets targets for and each process's CPU and memory, and
bench/results/bench-<time>.png (throughput and p50/p95/p99 latency against clients, and batch
throughput).

    python -m bench.suite [--requests 64] [--batches 4] [--concurrency 1,8,32]

The parts run one after another, never at once: every process of the part being measured has the
machine's cores to itself (and shares them with the benchmark client, as a real client would).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import fleet, pipeline
from bench.baseline.run import measure_baseline
from bench.pipeline import DEFAULT_BUNDLE, DEFAULT_DATA_ROOT, REPO_ROOT, git_commit, load_images, machine_info

# Issue 9's targets, as ratios of this run's own measurements.
TARGETS = {
    "fleet_batch_vs_bare_pipeline": 0.5,  # batch images/s end to end over the bare pipeline's (batch 1)
    "fleet_8_clients_vs_baseline": 2.0,  # images/s at 8 clients with `Prefer: wait`
    "embedded_vs_postgres_redis": 0.6,  # the embedded default over PostgreSQL + Redis (8 clients, batches)
}


def _single(record: dict[str, Any], clients: int) -> dict[str, Any]:
    return next(
        r for r in record["results"] if r.get("mode", "single") == "single" and r["concurrency"] == clients
    )


def _batch(record: dict[str, Any]) -> dict[str, Any]:
    return max((r for r in record["results"] if r.get("mode") == "batch"), key=lambda r: r["batch_size"])


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return round(numerator / denominator, 3) if numerator and denominator else None


def summarise(
    bare: dict[str, Any], pg: dict[str, Any], embedded: dict[str, Any], base: dict[str, Any]
) -> dict[str, Any]:
    """The headline figures, the ratios against their targets, and memory per process."""
    bare_b1 = next(r for r in bare["results"] if r["batch_size"] == 1)["images_per_s"]
    pg_batch, emb_batch = _batch(pg)["images_per_s"], _batch(embedded)["images_per_s"]
    pg_8, emb_8, base_8 = (_single(r, 8)["images_per_s"] for r in (pg, embedded, base))
    pg_p50_1 = _single(pg, 1)["latency_ms"]["p50"]
    base_p50_1 = _single(base, 1)["latency_ms"]["p50"]
    ratios = {
        "fleet_batch_vs_bare_pipeline": _ratio(pg_batch, bare_b1),
        "fleet_8_clients_vs_baseline": _ratio(pg_8, base_8),
        "embedded_vs_postgres_redis": min(
            filter(None, [_ratio(emb_8, pg_8), _ratio(emb_batch, pg_batch)]), default=None
        ),
    }
    met = {name: value is not None and value >= TARGETS[name] for name, value in ratios.items()}
    met["fleet_1_client_p50_vs_baseline"] = pg_p50_1 <= base_p50_1
    errors = {
        name: sum(sum(r["errors"].values()) for r in record["results"] if "errors" in r)
        for name, record in (("postgres_redis", pg), ("embedded", embedded), ("baseline", base))
    }
    met["no_errors"] = not any(errors.values())
    return {
        "images_per_s": {
            "bare_pipeline_batch_1": bare_b1,
            "fleet_postgres_redis_batch": pg_batch,
            "fleet_embedded_batch": emb_batch,
            "fleet_postgres_redis_8_clients": pg_8,
            "fleet_embedded_8_clients": emb_8,
            "baseline_8_clients": base_8,
        },
        "p50_ms_1_client": {"fleet_postgres_redis": pg_p50_1, "baseline": base_p50_1},
        "ratios": ratios,
        "targets": TARGETS,
        "met": met,
        "errors": errors,
        "rss_mib": {
            "postgres_redis": _batch(pg)["cost"]["rss_mib"],
            "embedded": _batch(embedded)["cost"]["rss_mib"],
            "baseline": _single(base, 8)["cost"]["rss_mib"],
        },
        "cpu_ms_per_image_batch": {
            "postgres_redis": _batch(pg)["cost"]["cpu_ms_per_image"],
            "embedded": _batch(embedded)["cost"]["cpu_ms_per_image"],
        },
    }


def plot(record: dict[str, Any], out: Path) -> None:
    """Throughput and latency against clients, and batch throughput, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    services = {
        "fleet (PostgreSQL + Redis)": record["fleet_postgres_redis"],
        "fleet (embedded SQLite)": record["fleet_embedded"],
        "baseline (FastAPI + PyTorch eager)": record["baseline"],
    }
    fig, (ax_tput, ax_lat, ax_batch) = plt.subplots(1, 3, figsize=(16, 4.8))
    colours = ("tab:blue", "tab:orange", "tab:green")
    for (label, sub), colour in zip(services.items(), colours, strict=True):
        singles = [r for r in sub["results"] if r.get("mode", "single") == "single"]
        clients = [r["concurrency"] for r in singles]
        ax_tput.plot(
            clients, [r["images_per_s"] or 0 for r in singles], marker="o", color=colour, label=label
        )
        for pct, style in (("p50", "-"), ("p95", "--"), ("p99", ":")):
            values = [r["latency_ms"][pct] if r["latency_ms"] else float("nan") for r in singles]
            ax_lat.plot(clients, values, style, marker="o", color=colour, label=f"{label} {pct}")
    bare = {
        f"bare pipeline, batch {r['batch_size']}": r["images_per_s"]
        for r in record["bare_pipeline"]["results"]
    }
    batches = {
        f"fleet {name}, batches of {_batch(record[key])['batch_size']}": _batch(record[key])["images_per_s"]
        for name, key in (("PostgreSQL + Redis", "fleet_postgres_redis"), ("embedded", "fleet_embedded"))
    }
    bars = bare | batches
    ax_batch.barh(list(bars), list(bars.values()), color=["grey"] * len(bare) + ["tab:blue", "tab:orange"])
    for y, value in enumerate(bars.values()):
        ax_batch.text(value, y, f" {value:.0f}", va="center")
    ax_tput.set(
        xlabel="clients in flight (Prefer: wait)", ylabel="images/s", title="throughput", xscale="log"
    )
    ax_lat.set(
        xlabel="clients in flight",
        ylabel="latency per image (ms)",
        title="latency",
        xscale="log",
        yscale="log",
    )
    ax_batch.set(xlabel="images/s", title="batch throughput vs the bare pipeline")
    for ax in (ax_tput, ax_lat):
        ax.set_xticks([1, 8, 32], ["1", "8", "32"])
        ax.grid(True, alpha=0.3)
    ax_tput.legend(fontsize=8)
    ax_lat.legend(fontsize=6, ncol=1)
    machine, bundle = record["machine"], record["bundle"]
    fig.suptitle(
        f"SkinTriage bench {record['created_at']} · {bundle['name']} {bundle['version']} · "
        f"{machine.get('cpu_count', '?')} cores · commit {str(record['git'].get('commit', '?'))[:10]}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _sub_record(run: Any, argv: list[str], workdir: Path, name: str) -> dict[str, Any]:
    """One part's record; a part that had errors has written them into its JSON, and the suite
    goes on (the summary counts them) instead of losing every other measurement."""
    out = workdir / f"{name}.json"
    try:
        run([*argv, "--out", str(out)])
    except SystemExit:
        if not out.is_file():
            raise
    loaded: dict[str, Any] = json.loads(out.read_text())
    return loaded


def main(argv: list[str] | None = None) -> Path:
    """Run every part, then write the JSON and the PNG; returns the JSON's path."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    parser.add_argument("--concurrency", default="1,8,32", help="clients in flight, comma-separated")
    parser.add_argument("--requests", type=int, default=64, help="single-image requests per concurrency")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    concurrency = [int(c) for c in args.concurrency.split(",")]
    if 1 not in concurrency or 8 not in concurrency:
        parser.error("--concurrency must include 1 and 8 (the targets are set there)")
    common = ["--bundle", str(args.bundle), "--data-root", str(args.data_root)]
    fleet_args = [
        *common,
        "--concurrency",
        args.concurrency,
        "--requests",
        str(args.requests),
        "--batch-sizes",
        str(args.batch_size),
        "--batches",
        str(args.batches),
    ]
    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="skintriage-bench-") as tmp:
        workdir = Path(tmp)
        print("== bare pipeline", flush=True)
        bare = _sub_record(pipeline.main, [*common, "--batch-sizes", f"1,{args.batch_size}"], workdir, "bare")
        print("== fleet, PostgreSQL + Redis", flush=True)
        pg = _sub_record(fleet.main, fleet_args, workdir, "pg")
        print("== fleet, embedded default", flush=True)
        embedded = _sub_record(fleet.main, [*fleet_args, "--embedded"], workdir, "embedded")
    print("== baseline", flush=True)
    images = load_images(args.data_root, 64)
    base = measure_baseline(images, concurrency, args.requests, 4, None)
    now = datetime.now(UTC)
    record: dict[str, Any] = {
        "benchmark": "suite",
        "created_at": now.isoformat(timespec="seconds"),
        "git": git_commit(),
        "machine": machine,
        "bundle": pg["bundle"],
        "summary": summarise(bare, pg, embedded, base),
        "bare_pipeline": bare,
        "fleet_postgres_redis": pg,
        "fleet_embedded": embedded,
        "baseline": base,
    }
    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"bench-{now:%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    plot(record, out.with_suffix(".png"))
    print(json.dumps(record["summary"], indent=2))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return out


if __name__ == "__main__":
    main()
