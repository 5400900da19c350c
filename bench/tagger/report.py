"""The tagger benchmark's tables and targets."""

from __future__ import annotations

import os

from ..harness import median, print_table
from .load import PathResult, Round
from .plan import BULK_IMAGES
from .raw import RawResult


def report(
    backend: str,
    raw: list[RawResult],
    services: list[PathResult],
    memory: dict[bool, tuple[float, float]],
    rounds: list[Round],
    ceilings: dict[str, tuple[RawResult, RawResult]],
    forward: RawResult,
) -> None:
    print_table(
        "Raw ceiling per backend (images/s, in-process, measured one after the other)",
        ["backend", "batch 1", "best batch", "at batch", "CPU streams", "CPU ms/image at best batch"],
        [
            (
                name,
                single.images_per_second,
                best.images_per_second,
                best.batch_size,
                best.streams,
                best.cpu_ms_per_image,
            )
            for name, (single, best) in ceilings.items()
        ],
    )
    print_table(
        f"Raw model in-process on {backend}, as the tagger runs it (EfficientNet-Lite0, model.predict on "
        "preprocessed input; streams 1: a batch is one "
        "forward pass over all threads, more: one single-threaded pass per image, that many at once)",
        ["torch threads", "CPU streams", "batch", "images/s", "ms/batch"],
        [(r.threads, r.streams, r.batch_size, r.images_per_second, r.ms_per_batch) for r in raw],
    )
    ceiling = max(raw, key=lambda r: r.images_per_second)
    single = min((r for r in raw if r.batch_size == 1), key=lambda r: r.ms_per_batch)
    print(
        f"ceiling: {ceiling.images_per_second:.1f} images/s (batch {ceiling.batch_size}, {ceiling.threads} threads, "
        f"{ceiling.streams} CPU streams); one forward pass: {single.ms_per_batch:.1f} ms ({single.threads} threads)"
    )

    rows = []
    for result in services:
        for concurrency, stats in result.by_concurrency.items():
            rows.append(
                (
                    result.path,
                    "on" if result.batching else "off",
                    concurrency,
                    result.images_per_second(concurrency),
                    stats.p50_ms,
                    stats.p95_ms,
                    stats.errors,
                )
            )
    print_table(
        f"Services (tagger and gateway as processes; /tagbulk sends {BULK_IMAGES} images per request)",
        ["path", "batching", "concurrency", "images/s", "p50 ms", "p95 ms", "errors"],
        rows,
    )
    cores = os.cpu_count() or 1
    cpu_rows = []
    for result in services:
        cost = result.cpu_ms[16]
        total = sum(cost.values())
        cpu_rows.append(
            (
                result.path,
                "on" if result.batching else "off",
                cost.get("tagger", 0.0),
                cost.get("gateway", 0.0),
                cost["load generator"],
                total,
                cores * 1000 / total,
            )
        )
    print_table(
        f"CPU time per image at concurrency 16 (ms; {cores} cores: the last column is what the CPUs allow)",
        ["path", "batching", "tagger", "gateway", "load generator", "total", "images/s at 100% CPU"],
        cpu_rows,
    )
    outside_rows = []
    for result in services:
        if not result.batching:
            continue
        cost = result.cpu_ms[16]
        tagger_outside = cost.get("tagger", 0.0) - forward.cpu_ms_per_image
        outside = tagger_outside + cost.get("gateway", 0.0)
        outside_rows.append(
            (
                result.path,
                cost.get("tagger", 0.0),
                tagger_outside,
                cost.get("gateway", 0.0),
                outside,
                "met" if outside <= 5.0 else "MISSED",
            )
        )
    print_table(
        f"CPU ms per image outside the forward pass at concurrency 16, batching on (forward: "
        f"{forward.cpu_ms_per_image:.1f} CPU ms/image on {backend}, batch {forward.batch_size}, "
        f"{forward.streams} CPU streams, in-process; target <= 5 ms)",
        ["path", "tagger", "tagger outside forward", "gateway", "outside forward, total", ""],
        outside_rows,
    )
    print_table(
        "Tagger resident memory (MiB, after its runs)",
        ["batching", "VmRSS", "VmHWM (peak)"],
        [("on" if on else "off", *memory[on]) for on in memory],
    )

    print_table(
        "Target rounds (each row measured back to back; images/s unless it says ms)",
        ["round", "raw ceiling", "raw forward ms", "/tag c=16", "/tagbulk c=16", "unbatched gRPC c=16", "/tag c=1 p50"],
        [
            (i, r.ceiling, r.forward_ms, r.tag16, r.bulk16, r.unbatched16 or float("nan"), r.tag1_p50_ms)
            for i, r in enumerate(rounds, start=1)
        ],
    )

    def verdict(name: str, values: list[float], target: float, fmt: str, higher: bool = True) -> tuple[str, ...]:
        middle = median(values)
        met = middle >= target if higher else middle <= target
        spread = f"{format(min(values), fmt)} to {format(max(values), fmt)}"
        bound = f"{'>=' if higher else '<='} {format(target, fmt)}"
        return (name, format(middle, fmt), spread, bound, "met" if met else "MISSED")

    targets = [
        verdict("gateway /tag c=16 / raw ceiling", [r.tag16 / r.ceiling for r in rounds], 0.8, ".0%"),
        verdict("gateway /tagbulk c=16 / raw ceiling", [r.bulk16 / r.ceiling for r in rounds], 0.8, ".0%"),
    ]
    if all(r.unbatched16 for r in rounds):
        targets += [
            verdict("gateway /tag c=16 / unbatched gRPC c=16", [r.tag16 / r.unbatched16 for r in rounds], 1.5, ".2f"),
            verdict(
                "gateway /tagbulk c=16 / unbatched gRPC c=16", [r.bulk16 / r.unbatched16 for r in rounds], 1.5, ".2f"
            ),
        ]
    # Latency: the margin over what the issue allows (10% + 5 ms over one forward pass), per round.
    targets.append(
        verdict(
            "gateway /tag c=1 p50 - (1.1 x forward + 5 ms)",
            [r.tag1_p50_ms - (1.1 * r.forward_ms + 5) for r in rounds],
            0.0,
            "+.1f",
            higher=False,
        )
    )
    print_table(
        f"Targets (issue 3; median of {len(rounds)} rounds, and their range)",
        ["measure", "median", "range", "target", ""],
        targets,
    )
