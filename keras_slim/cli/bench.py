"""`keras-slim bench`: batch-1 latency of several files side by side."""
from __future__ import annotations

import argparse
import os
from typing import Any

from keras_slim.cli.loading import check_input_file, check_json_path
from keras_slim.cli.output import EXIT_EXPORT, EXIT_OK, logger, one_line, table, write_json
from keras_slim.errors import CliError


def run(args: argparse.Namespace) -> int:
    """Time every file at each thread count and print one table."""
    from keras_slim.export.bench import BENCHMARKED_SUFFIXES, benchmark_file
    from keras_slim.export.report import format_bytes

    for path in args.files:
        check_input_file(path, BENCHMARKED_SUFFIXES, "model")
    check_json_path(args.json, "--json")
    results: dict[tuple[str, int], Any] = {}
    for threads in args.threads:  # every file at one thread count, then the next
        for path in args.files:
            logger.info("Timing %s with %d thread(s) ...", path, threads)
            try:
                results[path, threads] = benchmark_file(path, threads=threads, runs=args.runs,
                                                        warmup=args.warmup)
            except ImportError as err:
                raise CliError(str(err), EXIT_EXPORT) from err
            except Exception as err:
                raise CliError(f"cannot run {path!r} ({type(err).__name__}): "
                               f"{one_line(str(err), 600)}", EXIT_EXPORT) from err

    first = args.files[0]
    header = ["file", "runtime", "size"]
    for t in args.threads:
        header += [f"{t}T median ms", f"{t}T p90 ms", f"{t}T speed-up"]
    rows = []
    for path in args.files:
        row = [path, results[path, args.threads[0]].runtime, format_bytes(os.path.getsize(path))]
        for t in args.threads:
            r = results[path, t]
            row += [f"{r.median_ms:.3f}", f"{r.p90_ms:.3f}",
                    f"{results[first, t].median_ms / r.median_ms:.2f}x"]
        rows.append(row)
    print(table(header, rows, right=range(2, len(header))))
    print(f"\nbatch 1, {args.runs} runs after {args.warmup} warm-up; speed-up = median of "
          f"{first} / median of the file; LiteRT with XNNPACK, onnxruntime CPU, ncnn "
          "(fp16 options on, its default), MNN (normal precision)")
    if args.json:
        write_json(args.json, [dict(r.to_dict(), size_bytes=os.path.getsize(p))
                               for (p, _), r in results.items()])
    return EXIT_OK
