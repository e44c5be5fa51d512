"""The throughput benchmark's processes: TensorFlow and JAX workers alternating rounds, and
fresh processes measuring one variant's peak memory.

Keras-free on purpose: a process has one Keras backend, fixed when Keras is imported, so
`throughput.py --backend both` starts one worker per backend (`throughput.py --worker`) and
imports neither itself. A worker builds and warms up its variants, says so with its
environment, then runs one round (`throughput.run_round`) per round number read from its
stdin and answers each with the round's seconds per step. The parent sends every round to both
workers in turn, which one goes first alternating, and merges their samples into one table
(`throughput_report.both`). Only one worker computes at a time: the other waits on its stdin.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import throughput_report

THROUGHPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "throughput.py")
# A worker's protocol lines on stdout start with this; anything else a library prints is
# passed on to stderr.
MARK = "@@throughput "


def out_of_time(args, start) -> bool:
    """Whether `--time-limit` seconds have passed since the timing began at `start`."""
    limit = getattr(args, "time_limit", None)
    return limit is not None and time.perf_counter() - start >= limit


def _command(args, backend, *extra):
    cmd = [sys.executable, THROUGHPUT, "--backend", backend, "--batch", str(args.batch),
           "--size", str(args.size), *extra]
    return cmd + (["--no-torch"] if args.no_torch else [])


def peak_rss_mb(variant, args, backend):
    """Peak RSS of a fresh process that builds and runs one variant on `backend`."""
    cmd = _command(args, backend, "--only", variant, "--rounds", "1", "--steps", "3",
                   "--warmup", "1", "--json")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def serve(env, play_round):
    """A worker's loop: announce `env`, then answer each round number read from stdin with
    `play_round(r)`, `{variant: seconds per step}`, until stdin closes."""
    _emit({"env": env})
    for line in sys.stdin:
        _emit({"round": play_round(int(line))})


def _emit(message):
    print(MARK + json.dumps(message), flush=True)


class Worker:
    """One backend's `throughput.py --worker` process."""

    def __init__(self, backend, args):
        self.backend = backend
        extra = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--worker"]
        if args.only:
            extra += ["--only", args.only]
        self.process = subprocess.Popen(
            _command(args, backend, *extra), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, bufsize=1, env={**os.environ, "KERAS_BACKEND": backend})

    def receive(self):
        for line in self.process.stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK):])
            sys.stderr.write(line)
        raise RuntimeError(f"The {self.backend} worker exited with status "
                           f"{self.process.wait()} (its error is printed above).")

    def round(self, r):
        self.process.stdin.write(f"{r}\n")
        self.process.stdin.flush()
        return self.receive()["round"]

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()


def compare(args):
    """`(samples, envs)` of both backends, keyed by backend: their workers alternate rounds."""
    workers = {}
    try:
        # Both build and compile at once; timing starts when both are ready.
        for backend in throughput_report.NAMES:
            workers[backend] = Worker(backend, args)
        envs = {b: w.receive()["env"] for b, w in workers.items()}
        samples = {b: {v: [] for v in envs[b]["variants"]} for b in workers}
        order = list(workers)
        start = time.perf_counter()
        for r in range(args.rounds):
            for b in order if r % 2 == 0 else order[::-1]:
                for v, seconds in workers[b].round(r).items():
                    samples[b][v].append(seconds)
            if out_of_time(args, start):
                break
    finally:
        for worker in workers.values():
            worker.close()
    return samples, envs


def write(table, out=None):
    """Print the table, and write it to `out` when given."""
    print(table)
    if out:
        if os.path.exists(out):
            print(f"{out} exists; overwriting it with this run's table.")
        with open(out, "w") as f:
            f.write(table + "\n")


def main(args):
    """`--backend both`: one table of both backends."""
    samples, envs = compare(args)
    rss = None
    if args.memory:
        rss = {b: {v: peak_rss_mb(v, args, b) for v in samples[b]} for b in samples}
    write(throughput_report.both(samples, envs, args, rss), args.out)
