#!/usr/bin/env python3
"""Two authgate builds at saturation, in turn, with the kernel's view of each run.

    bench/ab_saturation.py OLD_BINARY NEW_BINARY [--pairs 12] [--seconds 4] [--scenario S1]

The backend (and for authz scenarios the sample) on CPU 1, one authgate at a time on CPU 0
with one worker, the scenario's generated config; `wrk -c32` on CPU 1 for --seconds after a
1 s warm-up, with `perf stat` on the proxy counting syscalls, context switches, page faults
and on-CPU time. Pairs alternate which build goes first. Prints one line per run, per-request
figures. Needs perf and wrk (bench/run and bench/profile install them). Used for the
"bimodal saturation" note in BENCHMARKS.md; not part of bench/run.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402

EVENTS = "raw_syscalls:sys_enter,context-switches,page-faults,task-clock"


def wrk(scn, seconds):
    argv = ["taskset", "-c", h.CPU_LOAD, "wrk", "-t1", "-c32", f"-d{seconds}s",
            "-H", f"x-ext-authz: {scn.header}", scn.url()]
    return subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60).stdout


def requests_of(wrk_out):
    for line in wrk_out.splitlines():
        if "requests in" in line:
            return int(line.split()[0])
    raise RuntimeError(f"no request count in wrk's output: {wrk_out!r}")


def one_run(binary, tag, scn, cfg, logdir, seconds):
    env = dict(os.environ, AUTHGATE_LOG="warn")
    argv = [binary, "run", "--config", cfg, "--workers", "1", "--drain-timeout", "1s"]
    proc = h.Proc(f"authgate-{tag}", argv, logdir, h.CPU_PROXY, env=env)
    try:
        h.wait_port(scn.port(), proc)
        wrk(scn, 1)
        perf = subprocess.Popen(["perf", "stat", "-x,", "-e", EVENTS, "-p", str(proc.pid), "--",
                                 "sleep", str(seconds)], stderr=subprocess.PIPE, text=True)
        n = requests_of(wrk(scn, seconds))
        err = perf.communicate(timeout=seconds + 30)[1]
    finally:
        proc.stop()
    counts = {}
    for line in err.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[0].replace(".", "", 1).isdigit():
            counts[fields[2]] = float(fields[0])
    per = " ".join(f"{k}={v / n:.4f}" for k, v in counts.items())
    return f"{tag} requests={n} per_request: {per} (task-clock in ms)"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--pairs", type=int, default=12)
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--scenario", default="S1", choices=["S1", "S2", "S3", "S4"])
    args = ap.parse_args()
    scn = h.SCENARIOS[args.scenario]
    wd = Path(tempfile.mkdtemp(prefix="authgate-ab."))
    logdir = wd / "logs"
    logdir.mkdir()
    (wd / "authgate").mkdir()
    cfg = wd / "authgate" / f"authgate-{scn.key}.yaml"
    cfg.write_text(h.authgate_config(scn, None))
    services = [h.Proc("backend", [args.new, "backend", "--port", h.BACKEND_PORT], logdir, h.CPU_LOAD)]
    try:
        if scn.authz:
            services.append(h.Proc("ext-authz", [args.new, "ext-authz", "--http", h.AUTHZ_HTTP_PORT,
                                                 "--grpc", h.AUTHZ_GRPC_PORT], logdir, h.CPU_LOAD, quiet=True))
        h.wait_port(int(h.BACKEND_PORT))
        builds = {"old": args.old, "new": args.new}
        for i in range(args.pairs):
            for tag in (["old", "new"] if i % 2 == 0 else ["new", "old"]):
                print(one_run(builds[tag], tag, scn, cfg, logdir, args.seconds), flush=True)
                time.sleep(0.5)
    finally:
        for s in services:
            s.stop()


if __name__ == "__main__":
    main()
