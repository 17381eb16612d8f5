#!/usr/bin/env python3
"""Where authgate's CPU goes, by component, from a `perf record --call-graph dwarf` profile.

    bench/perf_breakdown.py perf.data [--requests N]

Every sample is given to one component: the first of COMPONENTS (in order) whose pattern matches
a frame of its call stack; within a component, samples whose leaf frame is in the kernel count
as kernel time, and the syscall they are in is named. With --requests (the number of requests
served while recording) the shares are also given in µs of CPU per request.
"""

import collections
import re
import subprocess
import sys

COMPONENTS = [
    ("access log + metrics", r"Shared::log|authgate_proxy::metrics|access_log::|LogEntry"),
    ("policy evaluation", r"authgate_policy::"),
    ("authz: CheckRequest build + protobuf", r"build_check_request|header_list|prost::encoding|prost::message|encode_raw|merge_field|CheckResponse"),
    ("authz: check call (tonic client, decision)", r"authgate_authz::|tonic::client|tonic::request|tonic::codec|tonic::response"),
    ("authz: h2 connection task (gRPC transport)", r"h2::|tonic::transport|tower::buffer"),
    ("upstream: HTTP/1.1 client", r"hyper_util::client::legacy|dispatch::Client|hyper::client|role::Client"),
    ("proxy pipeline (headers, routing, glue)", r"authgate_proxy::pipeline|authgate_proxy::headers|authgate_proxy::body"),
    ("downstream: HTTP server (hyper)", r"dispatch::Server|role::Server|hyper::server|authgate_proxy::server|hyper_util::server"),
    ("tokio runtime (scheduler, timers, I/O driver)", r"tokio::"),
]
COMPILED = [(name, re.compile(p)) for name, p in COMPONENTS]
PREFIXES = ("__x64_sys_", "__do_sys_", "__se_sys_", "ksys_", "do_sys_", "do_", "__sys_")


def syscall_of(syms):
    """The syscall a kernel stack is in: the callee of do_syscall_64 (leaf first in `syms`)."""
    for i, s in enumerate(syms):
        if s.startswith("do_syscall_64") and i > 0:
            name = syms[i - 1].split(" ")[0]
            for p in PREFIXES:
                if name.startswith(p):
                    name = name[len(p):]
                    break
            return name
    return None


def samples(perf_data):
    out = subprocess.run(["perf", "script", "-i", str(perf_data), "-F", "comm,tid,period,ip,sym"],
                         capture_output=True, text=True, check=True).stdout
    stack = []
    period = 0
    for line in out.splitlines() + [""]:
        if not line.strip():
            if stack:
                yield period, stack
            stack = []
            continue
        if not line.startswith(("\t", " ")) or (not stack and not line.startswith("\t")):
            parts = line.split()
            period = next((int(p) for p in parts if p.isdigit() and len(p) > 5), 1_000_000)
            stack = []
            continue
        f = line.strip().split(" ", 1)
        addr, sym = f[0], (f[1] if len(f) > 1 else "")
        stack.append((addr, re.sub(r"\+0x[0-9a-f]+.*$", "", sym)))
    return


def breakdown(perf_data, requests=None):
    total = 0
    comp = collections.Counter()
    comp_kernel = collections.Counter()
    comp_sys = collections.defaultdict(collections.Counter)
    leaf_kind = collections.Counter()
    for period, stack in samples(perf_data):
        total += period
        syms = [s for _, s in stack]
        joined = "\n".join(syms)
        name = next((n for n, rx in COMPILED if rx.search(joined)), "other")
        comp[name] += period
        leaf_addr, leaf_sym = stack[0]
        if leaf_addr.startswith("ffffffff"):
            comp_kernel[name] += period
            comp_sys[name][syscall_of(syms) or "(irq/softirq/fault)"] += period
            leaf_kind["kernel"] += period
        elif re.search(r"malloc|free|realloc|unlink_chunk|consolidate|_int_", leaf_sym):
            leaf_kind["libc malloc/free"] += period
        elif re.search(r"memmove|memcpy|memset", leaf_sym):
            leaf_kind["libc memcpy/memset"] += period
        else:
            leaf_kind["user code (authgate, libc other)"] += period
    return total, comp, comp_kernel, comp_sys, leaf_kind


def report(perf_data, requests=None):
    total, comp, comp_kernel, comp_sys, leaf_kind = breakdown(perf_data, requests)
    if not total:
        return "no samples"
    per_req = (lambda p: f"{p / 1000 / requests:7.2f}") if requests else (lambda p: "      -")
    lines = [
        f"CPU samples: {total / 1e9:.2f} s" + (f" over {requests} requests = {total / 1000 / requests:.1f} µs/request" if requests else ""),
        "",
        f"{'component':48} {'share':>6} {'µs/req':>7} {'kernel':>7}  syscalls (kernel share)",
    ]
    for name, p in comp.most_common():
        k = comp_kernel[name]
        sc = ", ".join(f"{s} {100 * v / total:.1f}%" for s, v in comp_sys[name].most_common(3))
        lines.append(f"{name:48} {100 * p / total:5.1f}% {per_req(p)} {100 * k / total:6.1f}%  {sc}")
    lines += ["", "by leaf frame:"]
    for name, p in leaf_kind.most_common():
        lines.append(f"  {name:40} {100 * p / total:5.1f}% {per_req(p)} µs/req")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0)
    req = None
    if "--requests" in sys.argv:
        req = int(sys.argv[sys.argv.index("--requests") + 1])
    print(report(sys.argv[1], req))
