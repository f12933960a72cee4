"""The performance harness: ``make bench`` (or ``.venv/bin/python benchmarks/run.py --help``).

By default it writes ``--events`` change events through S3Destination for every
format x compression that this build supports, plus a naive baseline, against a
moto S3 server in a separate process on 127.0.0.1, and prints one table row per
configuration (medians of ``--repeat`` runs). Each run happens in a fresh child
process (see ``worker.py``) and a fresh bucket. Results are also saved as JSON in
``benchmarks/results/`` so runs can be compared.

``--input bson`` measures from what a MongoDB driver receives instead: BSON bytes
per event, written decoded (``ours-decoded``) or wrapped as RawBSONDocument
(``ours-raw``), against a naive baseline that decodes first (``baseline-bson``).
``--input both`` puts both kinds of rows in one table.

Other modes, instead of the table: ``--scaling`` (cost per event from 10k to 1M
or 10M events), ``--profile`` (cProfile of one configuration) and ``--stages``
(the encode steps alone, no S3). See benchmarks/README.md for what each number means.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
from measure import RunSpec, process_cpu_seconds

from rigatoni_s3 import Compression, S3Config, SerializationFormat
from rigatoni_s3.errors import ConfigError
from rigatoni_s3.formats import serializer_for
from rigatoni_s3.testing import EmbeddedS3Server

HERE = Path(__file__).resolve().parent
WORKER = HERE / "worker.py"
RESULTS = HERE / "results"
MB = 1_000_000
"""Throughput is in decimal megabytes (10**6 bytes), like network and disk figures."""

OUR_KINDS: dict[str, tuple[tuple[str, str], ...]] = {
    "dict": (("ours", ""),),
    "bson": (("ours-decoded", " decoded"), ("ours-raw", " raw")),
}
"""Per input, the runs of each configuration: (worker kind, suffix of the row's label)."""
BASELINE_OF: dict[str, str] = {"dict": "baseline", "bson": "baseline-bson"}
"""Per input, the naive baseline's kind, which is also its row's label."""
BSON_KINDS = frozenset({"ours-decoded", "ours-raw", "baseline-bson"})


@attrs.frozen
class Configuration:
    """One format x compression to measure."""

    format: SerializationFormat
    compression: Compression

    @property
    def label(self) -> str:
        name = "jsonl" if self.format is SerializationFormat.JSON else self.format.value
        return f"{name}+{self.compression.value}"


def available_configurations(
    formats: Sequence[SerializationFormat], compressions: Sequence[Compression]
) -> tuple[list[Configuration], list[str]]:
    """The configurations this build can write, and a note for each it cannot."""
    usable: list[Configuration] = []
    notes: list[str] = []
    for fmt in formats:
        for compression in compressions:
            configuration = Configuration(fmt, compression)
            try:
                serializer_for(fmt, compression)
                S3Config(bucket="probe", region="us-east-1", format=fmt, compression=compression)
            except NotImplementedError as exc:
                notes.append(f"skipped {configuration.label}: not implemented yet ({exc})")
                continue
            except ConfigError as exc:
                notes.append(f"skipped {configuration.label}: {exc}")
                continue
            usable.append(configuration)
    return usable, notes


class Bench:
    """The S3 server, the run's identity, and the child processes that do the work."""

    def __init__(self, args: argparse.Namespace, endpoint_url: str, server_pid: int | None) -> None:
        self.args = args
        self.endpoint_url = endpoint_url
        self.tag = datetime.now(UTC).strftime("%H%M%S")
        self.server_pid = server_pid
        self.runs: list[dict[str, Any]] = []

    def spec(self, kind: str, bucket: str, **overrides: Any) -> RunSpec:
        values: dict[str, Any] = {
            "kind": kind,
            "endpoint_url": self.endpoint_url,
            "bucket": f"bench-{self.tag}-{bucket}",
            "events": self.args.events,
            "batch_size": self.args.batch_size,
            "pool_size": self.args.pool_size,
            "hours": self.args.hours,
            "seed": self.args.seed,
            "gzip_level": self.args.baseline_gzip_level,
            "options": dict(self.args.options),
            "switch_interval": self.args.switch_interval,
        }
        values.update(overrides)
        return RunSpec(**values)

    def run(self, spec: RunSpec, label: str) -> dict[str, Any] | None:
        """Run one child; print a progress line; None (with the reason) if it failed."""
        server_cpu = self._server_cpu()
        started = time.perf_counter()
        process = subprocess.run(
            [sys.executable, str(WORKER)],
            input=json.dumps(attrs.asdict(spec)),
            capture_output=True,
            text=True,
            check=False,
        )
        elapsed = time.perf_counter() - started
        if process.returncode != 0 or not process.stdout.strip():
            print(f"  {label}: FAILED (exit {process.returncode})\n{_tail(process.stderr)}")
            return None
        result: dict[str, Any] = json.loads(process.stdout.splitlines()[-1])
        if server_cpu is not None:
            after = self._server_cpu()
            result["server_cpu_s"] = None if after is None else after - server_cpu
        result.update(kind=spec.kind, label=label, child_s=elapsed)
        self.runs.append(result)
        if "wall_s" in result and "events" in result:
            print(
                f"  {label}: {result['events'] / result['wall_s']:>10,.0f} events/s"
                f"  ({result['wall_s']:.2f} s measured, {elapsed:.1f} s with setup)",
                flush=True,
            )
        return result

    def _server_cpu(self) -> float | None:
        return None if self.server_pid is None else process_cpu_seconds(self.server_pid)


# -- the default table --------------------------------------------------------------------


def _inputs(args: argparse.Namespace) -> list[str]:
    return ["dict", "bson"] if args.input == "both" else [args.input]


def _slug(label: str) -> str:
    """A label as part of a bucket name."""
    return label.replace("+", "-").replace(" ", "-")


def run_table(bench: Bench, configurations: list[Configuration]) -> dict[str, Any]:
    args = bench.args
    inputs = _inputs(args)
    compress_floor = args.compress_floor and "bson" in inputs
    by_label: dict[str, list[dict[str, Any]]] = {}
    for repeat in range(1, args.repeat + 1):
        print(f"repeat {repeat}/{args.repeat}")
        for configuration in configurations:
            for source in inputs:
                for kind, suffix in OUR_KINDS[source]:
                    label = configuration.label + suffix
                    spec = bench.spec(
                        kind,
                        f"{_slug(label)}-r{repeat}",
                        format=configuration.format.value,
                        compression=configuration.compression.value,
                        compress_floor=compress_floor,
                    )
                    result = bench.run(spec, label)
                    if result is not None:
                        by_label.setdefault(label, []).append({**result, "repeat": repeat})
        if args.baseline:
            for source in inputs:
                kind = BASELINE_OF[source]
                result = bench.run(bench.spec(kind, f"{kind}-r{repeat}"), kind)
                if result is not None:
                    by_label.setdefault(kind, []).append({**result, "repeat": repeat})
    floors: dict[str, dict[str, Any]] = {}
    if args.s3_floor:
        print("S3 floor: the same object sizes through plain aioboto3 PUTs, 8 at a time")
        for label, results in by_label.items():
            sizes = results[0].get("object_sizes") or []
            spec = bench.spec("s3-floor", f"floor-{_slug(label)}", object_sizes=sizes)
            floor = bench.run(spec, f"floor {label}")
            if floor is not None:
                floors[label] = floor
                rounds = ", ".join(f"{w:.2f}" for w in floor["round_walls_s"])
                print(f"  floor {label}: {len(sizes)} objects in {rounds} s")
    summary = {label: summarize(results) for label, results in by_label.items()}
    for label, floor in floors.items():
        summary[label]["s3_floor_s"] = floor["wall_s"]
        server_cpu = floor.get("server_cpu_s")
        summary[label]["s3_floor_server_cpu_s"] = (
            None if server_cpu is None else server_cpu / floor["rounds"]
        )
    # Each configuration against the baseline of the same round, which ran minutes apart
    # at most: on a shared machine that pairs runs that saw the same load. Rows that start
    # from dicts compare with ``baseline``, rows that start from BSON with ``baseline-bson``.
    for field, baseline in (("vs_baseline", "baseline"), ("vs_bson_baseline", "baseline-bson")):
        rates = {r["repeat"]: r["events"] / r["wall_s"] for r in by_label.get(baseline, [])}
        for label, results in by_label.items():
            if (results[0]["kind"] in BSON_KINDS) != (baseline == "baseline-bson"):
                continue
            ratios = [
                r["events"] / r["wall_s"] / rates[r["repeat"]]
                for r in results
                if r["repeat"] in rates
            ]
            summary[label][f"{field}_each"] = ratios
            summary[label][field] = statistics.median(ratios) if ratios else None
    return summary


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of each figure over the repeats (each figure on its own)."""

    def median(get: Callable[[dict[str, Any]], float | None]) -> float | None:
        values = [v for v in map(get, results) if v is not None]
        return statistics.median(values) if values else None

    def dist(name: str, field: str) -> float | None:
        return median(lambda r: r[name][field] if r.get(name) else None)

    def floor(get: Callable[[dict[str, Any]], float]) -> float | None:
        return median(lambda r: get(r) if r.get("compress_floor") else None)

    rates = [r["events"] / r["wall_s"] for r in results]
    return {
        "kind": results[0]["kind"],
        "runs": len(results),
        "events": results[0]["events"],
        "events_per_s": statistics.median(rates),
        "events_per_s_min": min(rates),
        "events_per_s_max": max(rates),
        "wall_s": median(lambda r: r["wall_s"]),
        "close_s": median(lambda r: r.get("close_s")),
        "input_mb_per_s": median(lambda r: r["input_bytes"] / r["wall_s"] / MB),
        "stored_bytes_per_event": median(lambda r: r["stored_bytes"] / r["events"]),
        "input_bytes_per_event": median(lambda r: r["input_bytes"] / r["events"]),
        "objects": median(lambda r: r["objects"]),
        "peak_rss_mib": median(lambda r: r["peak_rss_kib"] / 1024),
        "peak_rss_delta_mib": median(lambda r: (r["peak_rss_kib"] - r["rss_before_kib"]) / 1024),
        "cpu_us_per_event": median(lambda r: r["cpu_s"] / r["events"] * 1e6),
        "server_cpu_s": median(lambda r: r.get("server_cpu_s")),
        "producer_us_per_event": median(lambda r: r["producer_s"] / r["events"] * 1e6),
        "lag_p50_ms": dist("loop_lag", "p50_ms"),
        "lag_p99_ms": dist("loop_lag", "p99_ms"),
        "lag_max_ms": dist("loop_lag", "max_ms"),
        "write_p50_ms": dist("write_batch", "p50_ms"),
        "write_p99_ms": dist("write_batch", "p99_ms"),
        "write_max_ms": dist("write_batch", "max_ms"),
        "bson_bytes_per_event": median(lambda r: r.get("bson_bytes_per_event")),
        "convert_us_per_event": median(
            lambda r: None if r.get("convert_s") is None else r["convert_s"] / r["events"] * 1e6
        ),
        "compress_floor_us_per_event": floor(
            lambda r: r["compress_floor"]["cpu_s"] / r["events"] * 1e6
        ),
        "cpu_per_compress_floor": floor(lambda r: r["cpu_s"] / r["compress_floor"]["cpu_s"]),
        "compress_floor_same_bytes": all(
            r["compress_floor"]["same_bytes_as_stored"] for r in results if r.get("compress_floor")
        ),
    }


def print_table(summary: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    inputs = _inputs(args)
    label_width = max(12, *map(len, summary))
    columns: list[tuple[str, int, Callable[[dict[str, Any], str], str]]] = [
        ("config", label_width, lambda r, label: label),
        ("events/s", 9, lambda r, _: f"{r['events_per_s']:,.0f}"),
        ("(min-max)", 15, lambda r, _: f"{r['events_per_s_min'] / 1000:.1f}-{r['events_per_s_max'] / 1000:.1f}k"),
        ("in MB/s", 7, lambda r, _: f"{r['input_mb_per_s']:.1f}"),
        ("B/event", 7, lambda r, _: f"{r['stored_bytes_per_event']:.0f}"),
        ("objs", 5, lambda r, _: f"{r['objects']:.0f}"),
        ("peak RSS MiB", 13, lambda r, _: f"{r['peak_rss_mib']:.0f} (+{r['peak_rss_delta_mib']:.0f})"),
        ("loop lag ms p50/p99/max", 23, lambda r, _: _triple(r, "lag")),
        ("write_batch ms p50/p99/max", 26, lambda r, _: _triple(r, "write")),
        ("close s", 7, lambda r, _: _num(r.get("close_s"), 2)),
        ("CPU us/ev", 9, lambda r, _: f"{r['cpu_us_per_event']:.1f}"),
        ("S3 CPU s", 8, lambda r, _: _num(r.get("server_cpu_s"), 2)),
        ("S3 floor s", 10, lambda r, _: _num(r.get("s3_floor_s"), 2)),
        ("vs base", 7, lambda r, _: _ratio(r.get("vs_baseline"))),
    ]  # fmt: skip
    if "bson" in inputs:
        if "dict" not in inputs:
            columns.pop()  # no dict rows: nothing is compared with the dict baseline
        columns += [
            ("vs bson-base", 12, lambda r, _: _ratio(r.get("vs_bson_baseline"))),
            ("convert us/ev", 13, lambda r, _: _num(r.get("convert_us_per_event"), 2)),
            ("compress-only us/ev", 19, lambda r, _: _num(r.get("compress_floor_us_per_event"), 2)),
            ("CPU/compress-only", 17, lambda r, _: _ratio(r.get("cpu_per_compress_floor"), 1)),
        ]  # fmt: skip
    bson_sizes = [r["bson_bytes_per_event"] for r in summary.values() if r["bson_bytes_per_event"]]
    print()
    print(
        f"{args.events:,} events per run, write_batch of {args.batch_size}; "
        f"medians of {args.repeat} run(s)"
        + ("" if args.switch_interval is None else f"; switch interval {args.switch_interval} s")
        + (f"; BSON {bson_sizes[0]:.0f} bytes per event on average" if bson_sizes else "")
    )
    print("  ".join(f"{title:>{width}}" for title, width, _ in columns))
    for label, row in summary.items():
        print("  ".join(f"{cell(row, label):>{width}}" for _, width, cell in columns))


def _triple(row: dict[str, Any], prefix: str) -> str:
    values = [row.get(f"{prefix}_{p}_ms") for p in ("p50", "p99", "max")]
    if any(v is None for v in values):
        return "-"
    return "/".join(f"{v:.1f}" for v in values if v is not None)


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ratio(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}x"


# -- other modes ----------------------------------------------------------------------


def run_scaling(bench: Bench) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    print("scaling: jsonl+zstd")
    for volume in bench.args.volumes:
        spec = bench.spec("ours", f"scale-{volume}", events=volume, compression="zstd")
        result = bench.run(spec, f"{volume:>10,} events")
        if result is None:
            continue
        rows.append(
            {
                "events": volume,
                "wall_s": result["wall_s"],
                "child_s": result["child_s"],
                "us_per_event": result["wall_s"] / volume * 1e6,
                "cpu_us_per_event": result["cpu_s"] / volume * 1e6,
                "events_per_s": volume / result["wall_s"],
                "objects": result["objects"],
                "stored_bytes_per_event": result["stored_bytes"] / volume,
                "peak_rss_mib": result["peak_rss_kib"] / 1024,
                "lag_p99_ms": (result.get("loop_lag") or {}).get("p99_ms"),
                "write_p99_ms": (result.get("write_batch") or {}).get("p99_ms"),
            }
        )
    print()
    print(
        f"{'events':>12}  {'us/event':>8}  {'CPU us/ev':>9}  {'events/s':>9}  {'objects':>7}  "
        f"{'B/event':>7}  {'peak RSS MiB':>12}  {'lag p99 ms':>10}  {'write p99 ms':>12}  {'took':>7}"
    )
    for row in rows:
        print(
            f"{row['events']:>12,}  {row['us_per_event']:>8.1f}  {row['cpu_us_per_event']:>9.1f}  "
            f"{row['events_per_s']:>9,.0f}  {row['objects']:>7}  "
            f"{row['stored_bytes_per_event']:>7.0f}  {row['peak_rss_mib']:>12.0f}  "
            f"{_num(row['lag_p99_ms'], 1):>10}  {_num(row['write_p99_ms'], 1):>12}  "
            f"{row['child_s']:>6.0f}s"
        )
    return rows


def run_profile(bench: Bench, configuration: Configuration, stamp: str) -> dict[str, Any]:
    import pstats

    kind = "ours-raw" if bench.args.input == "bson" else "ours"
    path = RESULTS / f"{stamp}-profile-{kind}-{_slug(configuration.label)}.prof"
    spec = bench.spec(
        kind,
        "profile",
        format=configuration.format.value,
        compression=configuration.compression.value,
        profile_path=str(path),
    )
    print(f"profile: {kind} {configuration.label} under cProfile (event loop + encode threads)")
    bench.run(spec, configuration.label)
    stats = pstats.Stats(str(path))
    print(f"\nwritten to {path}; open with: python -m pstats {path}")
    print(
        "Threads waiting count as time: SimpleQueue.get is an idle encode thread and\n"
        "epoll.poll an idle event loop. cProfile inflates Python calls more than C calls.\n"
    )
    lines = bench.args.profile_lines
    stats.sort_stats("tottime").print_stats(lines)
    stats.sort_stats("cumulative").print_stats("rigatoni_s3", lines)
    return {"profile_path": str(path)}


def run_stages(bench: Bench, configurations: list[Configuration]) -> dict[str, Any]:
    print("encode steps alone (no S3, one thread), us per event:")
    out: dict[str, Any] = {}
    for configuration in configurations:
        spec = bench.spec(
            "stages",
            "stages",
            format=configuration.format.value,
            compression=configuration.compression.value,
        )
        result = bench.run(spec, configuration.label)
        if result is None:
            continue
        out[configuration.label] = result
        steps = "  ".join(f"{k} {v:.2f}" for k, v in result["us_per_event"].items())
        print(f"  {configuration.label:<14} {steps}")
    return out


# -- the command line -------------------------------------------------------------------


def _count(text: str) -> int:
    """``100000``, ``100k``, ``1m`` or ``1_000_000``."""
    text = text.strip().lower().replace("_", "")
    factor = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if factor > 1 else text) * factor)


def _option(text: str) -> tuple[str, Any]:
    """``name=value``; the value is read as JSON when it parses (numbers, true), else a string."""
    name, sep, raw = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return name.strip(), value


def _choices(enum_type: Any) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        return [enum_type(part.strip().lower()) for part in text.split(",") if part.strip()]

    return parse


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=_count, default=100_000, help="events per run (100k)")
    parser.add_argument("--batch-size", type=_count, default=1000, help="events per write_batch")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per configuration; medians are shown (1)"
    )
    parser.add_argument(
        "--formats",
        type=_choices(SerializationFormat),
        default=list(SerializationFormat),
        help="comma-separated: json,csv,parquet,avro (all)",
    )
    parser.add_argument(
        "--compressions",
        type=_choices(Compression),
        default=list(Compression),
        help="comma-separated: none,gzip,zstd (all)",
    )
    parser.add_argument(
        "--input",
        choices=("dict", "bson", "both"),
        default="dict",
        help="what the producer starts from: decoded dicts (dict), BSON bytes as a driver "
        "receives them (bson: rows decoded, raw and baseline-bson), or both in one table",
    )
    parser.add_argument("--no-baseline", dest="baseline", action="store_false")
    parser.add_argument(
        "--no-s3-floor",
        dest="s3_floor",
        action="store_false",
        help="skip the plain-aioboto3 PUT run that shows what the S3 server alone costs",
    )
    parser.add_argument(
        "--no-compress-floor",
        dest="compress_floor",
        action="store_false",
        help="with --input bson/both: skip timing the codec alone on each run's output",
    )
    parser.add_argument(
        "--set",
        dest="options",
        type=_option,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an S3Config keyword for our runs, e.g. --set max_batch_events=50000 (repeatable)",
    )
    parser.add_argument(
        "--baseline-gzip-level", type=int, default=9, help="9: gzip.compress's default"
    )
    parser.add_argument(
        "--switch-interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="sys.setswitchinterval in our runs (Python's default: 0.005); see README",
    )
    mode = parser.add_argument_group("other modes (each replaces the table)")
    mode.add_argument("--scaling", action="store_true", help="jsonl+zstd at each of --volumes")
    mode.add_argument(
        "--volumes",
        type=lambda s: [_count(p) for p in s.split(",")],
        default=[10_000, 100_000, 1_000_000],
        help="for --scaling (10k,100k,1m); add 10m for the long run",
    )
    mode.add_argument(
        "--profile",
        action="store_true",
        help="cProfile jsonl+zstd (or --formats/--compressions' first); ours-raw with --input bson",
    )
    mode.add_argument("--profile-lines", type=int, default=30)
    mode.add_argument("--stages", action="store_true", help="time the encode steps without S3")
    pool = parser.add_argument_group("event pool")
    pool.add_argument("--pool-size", type=_count, default=20_000, help="distinct events (20k)")
    pool.add_argument("--hours", type=int, default=4, help="hours of clusterTime the pool spans")
    pool.add_argument("--seed", type=int, default=20250303)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    try:  # a bad --set fails here, not in every child
        S3Config(bucket="probe", region="us-east-1", **dict(args.options))
    except (ConfigError, TypeError) as exc:
        sys.exit(f"--set: {exc}")
    configurations, notes = available_configurations(args.formats, args.compressions)
    for note in notes:
        print(note)
    if not configurations:
        sys.exit("nothing to measure")
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(exist_ok=True)
    report: dict[str, Any] = {
        "started": started.isoformat(),
        "host": _host(),
        "args": {k: _jsonable(v) for k, v in vars(args).items()},
        "skipped": notes,
    }
    server = EmbeddedS3Server()
    with server as endpoint:
        bench = Bench(args, endpoint.url, server.pid)
        print(f"S3: moto server at {endpoint.url} (pid {bench.server_pid}), {_host_line()}")
        if args.scaling or args.profile or args.stages:
            if args.stages:
                report["stages"] = run_stages(bench, configurations)
            if args.profile:
                wanted = Configuration(SerializationFormat.JSON, Compression.ZSTD)
                target = wanted if wanted in configurations else configurations[0]
                report["profile"] = run_profile(bench, target, stamp)
            if args.scaling:
                report["scaling"] = run_scaling(bench)
        else:
            summary = run_table(bench, configurations)
            report["summary"] = summary
            print_table(summary, args)
            _print_definitions(bench.runs, bson="bson" in _inputs(args))
        report["runs"] = [{k: v for k, v in r.items() if k != "object_sizes"} for r in bench.runs]
    report["took_s"] = (datetime.now(UTC) - started).total_seconds()
    path = RESULTS / f"{stamp}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nresults: {path.relative_to(HERE.parent)} (took {report['took_s']:.0f} s)")


def _print_definitions(runs: list[dict[str, Any]], *, bson: bool = False) -> None:
    sample = next((r for r in runs if r.get("input_bytes")), None)
    per_event = sample["input_bytes"] / sample["events"] if sample else float("nan")
    print(
        f"""
events/s, in MB/s  events (and their input bytes, 10^6 per MB) / time from the first
                   write_batch until close() returned, i.e. until all is in S3.
input bytes        compact UTF-8 JSON of each raw change-stream event (non-JSON values
                   as str()); {per_event:.0f} bytes per event on average.
B/event            bytes of all objects stored in S3 / events.
peak RSS           high-water RSS of the run's process during the measured window
                   (+ growth over the RSS it had before, which includes the event pool).
loop lag           how late a task that sleeps 1 ms wakes up (ours only).
close s            the part of that time spent in the final close(): what was still
                   buffered, encoded or uploading after the last write_batch returned.
write_batch        time per call of 1 batch. For the baseline: the blocking time of
                   dumps + gzip + PutObject of one batch.
CPU us/ev          user+system CPU of the writer's process (all threads) per event.
S3 CPU s           CPU the moto server process used during the run.
S3 floor s         the same object sizes PUT with plain aioboto3, 8 in flight (best of
                   3 rounds): what S3 alone needs; compare with close s and the run's time.
vs base            events/s / the naive baseline's events/s (sync boto3, json.dumps,
                   gzip, one PutObject per batch) of the same round; median over rounds."""
    )
    if not bson:
        return
    sizes = [r["bson_bytes_per_event"] for r in runs if r.get("bson_bytes_per_event")]
    bson_size = sizes[0] if sizes else float("nan")
    print(
        f"""
From BSON ({bson_size:.0f} bytes per event on average; the producer replays BSON bytes):
... decoded        the producer bson.decode()s each batch (default CodecOptions) and
                   passes the dicts to write_batch: a consumer without the raw path.
... raw            the producer wraps each event's bytes in RawBSONDocument and passes
                   those: what CodecOptions(document_class=RawBSONDocument) yields.
baseline-bson      bson.decode per event, then exactly the baseline above.
vs bson-base       events/s / baseline-bson's events/s of the same round.
convert us/ev      the producer's decode (decoded) or wrap (raw) per event; inside the
                   measured time, and in CPU us/ev.
compress-only      CPU of the library's codec alone (zstandard at ZSTD_LEVEL, gzip at
  us/ev            GZIP_LEVEL), one thread, on the run's own objects read back and
                   decompressed (the very bytes the writer compressed); best of 5. "-"
                   for no compression and for Parquet/Avro (compressed inside the file).
CPU/compress-only  CPU us/ev / compress-only us/ev: the run's CPU as a multiple of
                   what compressing its output alone costs."""
    )


def _host() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
    }


def _host_line() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} CPUs, load {load}, Python {platform.python_version()}"


def _jsonable(value: Any) -> Any:
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return getattr(value, "value", value)


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join("    " + line for line in text.strip().splitlines()[-lines:])


if __name__ == "__main__":
    main()
