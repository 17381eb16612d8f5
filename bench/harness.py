#!/usr/bin/env python3
"""Side-by-side benchmark of authgate, Envoy and nginx (issue 6). Run it through `bench/run`,
which installs the tools and builds the binaries first; BENCHMARKS.md explains the method.

Only the Python standard library is used.
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RELEASE = ROOT / "target" / "release"

# Loopback ports: a block away from the seed demo's (8080, 9080, 8000, 9000), from the usual
# choices of people experimenting by hand, and below the kernel's ephemeral range (32768-60999
# by default): inside it, any connection made during the run (the run's own clients, a test
# suite next to it) can be given one of these ports as its local port, and the next proxy start
# then fails with "Address already in use" mid-run. BENCH_PORT_BASE moves the whole block.
PORT_BASE = int(os.environ.get("BENCH_PORT_BASE", "21100"))
PROXY_PORT = PORT_BASE
TLS_PORT = PORT_BASE + 1
BACKEND_PORT = PORT_BASE + 2
AUTHZ_HTTP_PORT = PORT_BASE + 3
AUTHZ_GRPC_PORT = PORT_BASE + 4
ENVOY_ADMIN_PORT = PORT_BASE + 5

CPU_PROXY = "0"  # the proxy under test
CPU_LOAD = "1"  # load generator, authz service, backend

AUTHZ_HOST = "ext-authz.default.svc.cluster.local"
BACKEND_HOST = "productpage.default.svc.cluster.local"
PATH = "/productpage"

PROXIES = ["authgate", "envoy", "nginx"]
PEERS = ["envoy", "nginx"]


class Scenario:
    def __init__(self, key, title, authz=None, header="allow", expect=200, tls=False, h2=False, direct=False):
        self.key, self.title, self.authz, self.header = key, title, authz, header
        self.expect, self.tls, self.h2, self.direct = expect, tls, h2, direct

    def port(self):
        if self.direct:
            return BACKEND_PORT
        return TLS_PORT if self.tls else PROXY_PORT

    def url(self):
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port()}{PATH}"


SCENARIOS = {
    s.key: s
    for s in [
        Scenario("S0", "direct to the backend (baseline, no proxy)", direct=True),
        Scenario("S1", "proxy, no authz"),
        Scenario("S2", "gRPC ext_authz, allowed", authz="grpc"),
        Scenario("S3", "HTTP ext_authz, allowed", authz="http"),
        Scenario("S4", "gRPC ext_authz, denied (403)", authz="grpc", header="deny", expect=403),
        Scenario("S5", "TLS from the client + gRPC ext_authz, allowed", authz="grpc", tls=True),
        Scenario("S6", "HTTP/2 (h2c) from the client + gRPC ext_authz, allowed", authz="grpc", h2=True),
    ]
}

NGINX_NO_GRPC = "nginx has no gRPC ext_authz"
NGINX_HTTP_SUBST = "nginx-uses-http-authz"


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# /proc sampling


CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_stat(pid):
    """(utime, stime) in seconds for the whole process (all threads, dead ones included)."""
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    fields = data[data.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime is field 14, stime field 15.
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def proc_runtime_ns(pid):
    """Exact on-CPU nanoseconds summed over the live threads (schedstat)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError, ValueError):
            pass
    return total


def vm_hwm_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def cpu_busy_s(cpu):
    """Busy seconds of one CPU since boot (/proc/stat, everything but idle and iowait)."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                v = [int(x) for x in line.split()[1:]]
                return (sum(v[:8]) - v[3] - v[4]) / CLK_TCK
    return 0.0


class CpuSample:
    """CPU consumed by a set of processes: user/sys from /proc/PID/stat (clock ticks) and the
    exact total from schedstat. The user/sys split is applied to the exact total."""

    def __init__(self, pids):
        self.pids = list(pids)
        self.t = time.monotonic()
        self.user = self.sys = 0.0
        self.ns = 0
        self.cpu0_busy = cpu_busy_s(CPU_PROXY)
        for p in self.pids:
            u, s = proc_stat(p)
            self.user += u
            self.sys += s
            self.ns += proc_runtime_ns(p)

    def since(self, earlier):
        du, ds = self.user - earlier.user, self.sys - earlier.sys
        total = (self.ns - earlier.ns) / 1e9
        ticks_total = du + ds
        if total <= 0:
            total = ticks_total
        user_share = du / ticks_total if ticks_total > 0 else 0.5
        return {
            "wall_s": self.t - earlier.t,
            "cpu_s": total,
            "user_s": total * user_share,
            "sys_s": total * (1 - user_share),
            "ticks_user_s": du,
            "ticks_sys_s": ds,
            # Time CPU 0 spent on anything but the proxy (other processes, interrupts): noise.
            "cpu0_other_s": max(0.0, (self.cpu0_busy - earlier.cpu0_busy) - (du + ds)),
        }


# --------------------------------------------------------------------------------------------
# Processes


class Proc:
    """A child process we started (and only those are ever signalled)."""

    def __init__(self, name, argv, logdir, cpu, quiet=False, env=None):
        """quiet: stdout and stderr to /dev/null (for the authz sample, which logs every check)."""
        self.name = name
        self.log_path = logdir / f"{name}.log"
        self.log = open(self.log_path, "ab")
        full = ["taskset", "-c", cpu] + [str(a) for a in argv]
        self.popen = subprocess.Popen(
            full,
            stdout=subprocess.DEVNULL if quiet else self.log,
            stderr=subprocess.DEVNULL if quiet else self.log,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        self.pid = self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def stop(self, grace=5.0):
        if self.alive():
            try:
                self.popen.send_signal(signal.SIGTERM)
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.log.close()

    def tail(self, n=20):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def ephemeral_port_range():
    """The kernel's range for automatically chosen local ports, or None if unreadable."""
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return None


def port_open(port, host="127.0.0.1"):
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def ensure_free(port):
    if port_open(port):
        raise RuntimeError(f"port {port} is already in use by another process (set BENCH_PORT_BASE to move the bench's ports)")


def wait_port(port, proc=None, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited early:\n{proc.tail()}")
        if port_open(port):
            if proc is not None and not proc.alive():
                raise RuntimeError(f"{proc.name} exited (port {port} is someone else's):\n{proc.tail()}")
            return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} not open after {timeout}s" + (f":\n{proc.tail()}" if proc else ""))


# --------------------------------------------------------------------------------------------
# Proxy configurations (written into the run's config directory so they can be inspected)


def authgate_config(scn: Scenario, certs):
    listener = f"  - name: ingress\n    address: 127.0.0.1:{scn.port()}\n"
    if scn.tls:
        listener += (
            f"    tls:\n      certificates:\n"
            f"        - {{ certFile: {certs['cert']}, keyFile: {certs['key']} }}\n"
        )
    policy = ""
    if scn.authz:
        provider = "ext-authz-grpc" if scn.authz == "grpc" else "ext-authz-http"
        policy = f"""authorizationPolicies:
  - name: ext-authz
    action: CUSTOM
    provider: {{ name: {provider} }}
    rules:
      - to: [{{ operation: {{ paths: ["{PATH}"] }} }}]
"""
    return f"""# authgate, {scn.key}: {scn.title} (generated by bench/harness.py)
listeners:
{listener}backends:
  - name: bookinfo
    endpoints: ["{BACKEND_HOST}:{BACKEND_PORT}"]
routes:
  - name: bookinfo
    match: {{ prefix: / }}
    backend: bookinfo
extensionProviders:
  - name: ext-authz-grpc
    envoyExtAuthzGrpc: {{ service: {AUTHZ_HOST}, port: {AUTHZ_GRPC_PORT}, timeout: 10s }}
  - name: ext-authz-http
    envoyExtAuthzHttp:
      service: {AUTHZ_HOST}
      port: {AUTHZ_HTTP_PORT}
      timeout: 10s
      includeRequestHeadersInCheck: ["x-ext-authz"]
      headersToUpstreamOnAllow: ["x-ext-authz-check-result"]
{policy}staticHosts:
  {AUTHZ_HOST}: 127.0.0.1
  {BACKEND_HOST}: 127.0.0.1
admin: {{ address: disabled }}
accessLog: {{ format: "off" }}
"""


def envoy_cluster(name, port, h2=False):
    c = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "5s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}
            ],
        },
    }
    if h2:
        c["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    return c


def envoy_config(scn: Scenario, certs, istio_shape=True):
    """What istiod programs for the seed (when istio_shape): per CUSTOM provider an RBAC
    shadow filter matching the policy's rules and an ext_authz filter gated on its result
    (filter_enabled_metadata). Without istio_shape: a bare ext_authz filter on every request."""
    filters = []
    if scn.authz:
        provider = "ext-authz-grpc" if scn.authz == "grpc" else "ext-authz-http"
        ext = {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "transport_api_version": "V3",
            "failure_mode_allow": False,
            "status_on_error": {"code": 403},
        }
        if istio_shape:
            rule = f"istio-ext-authz-{provider}-ns[istio-system]-policy[ext-authz]-rule[0]"
            filters.append(
                {
                    "name": "envoy.filters.http.rbac",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
                        "shadow_rules": {
                            "action": "DENY",
                            "policies": {
                                rule: {
                                    "permissions": [
                                        {"and_rules": {"rules": [{"or_rules": {"rules": [
                                            {"url_path": {"path": {"exact": PATH}}}
                                        ]}}]}}
                                    ],
                                    "principals": [{"and_ids": {"ids": [{"any": True}]}}],
                                }
                            },
                        },
                        "shadow_rules_stat_prefix": "istio_ext_authz_",
                    },
                }
            )
            ext["filter_enabled_metadata"] = {
                "filter": "envoy.filters.http.rbac",
                "path": [{"key": "istio_ext_authz_shadow_effective_policy_id"}],
                "value": {"string_match": {"prefix": f"istio-ext-authz-{provider}"}},
            }
        if scn.authz == "grpc":
            ext["grpc_service"] = {
                "envoy_grpc": {"cluster_name": "ext_authz_grpc", "authority": AUTHZ_HOST},
                "timeout": "10s",
            }
        else:
            ext["http_service"] = {
                "server_uri": {"uri": f"http://{AUTHZ_HOST}", "cluster": "ext_authz_http", "timeout": "10s"},
                "authorization_response": {
                    "allowed_upstream_headers": {"patterns": [{"exact": "x-ext-authz-check-result", "ignore_case": True}]}
                },
            }
            ext["allowed_headers"] = {"patterns": [{"exact": "x-ext-authz", "ignore_case": True}]}
        filters.append({"name": "envoy.filters.http.ext_authz", "typed_config": ext})
    filters.append(
        {"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
    )
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "codec_type": "AUTO",
        "route_config": {
            "name": "ingress",
            "virtual_hosts": [
                {"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "backend", "timeout": "15s"}}]}
            ],
        },
        "http_filters": filters,
    }
    chain = {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
    if scn.tls:
        chain["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "common_tls_context": {
                    "tls_certificates": [
                        {"certificate_chain": {"filename": str(certs["cert"])}, "private_key": {"filename": str(certs["key"])}}
                    ],
                    "alpn_protocols": ["h2", "http/1.1"],
                },
            },
        }
    clusters = [envoy_cluster("backend", BACKEND_PORT)]
    if scn.authz == "grpc":
        clusters.append(envoy_cluster("ext_authz_grpc", AUTHZ_GRPC_PORT, h2=True))
    elif scn.authz == "http":
        clusters.append(envoy_cluster("ext_authz_http", AUTHZ_HTTP_PORT))
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": ENVOY_ADMIN_PORT}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "ingress",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": scn.port()}},
                    "filter_chains": [chain],
                }
            ],
            "clusters": clusters,
        },
    }


def nginx_config(scn: Scenario, certs, wd: Path):
    """nginx equivalent: one worker, keep-alive pools to the backend and the authz service,
    auth_request to the sample's HTTP check port (nginx has no gRPC authz: scenarios that use
    gRPC authz for the others use HTTP authz here, flagged in the report)."""
    listen = f"listen 127.0.0.1:{scn.port()}"
    if scn.tls:
        listen += " ssl"
    if scn.h2:
        listen += " http2"
    tls = ""
    if scn.tls:
        tls = f"""
        ssl_certificate {certs['cert']};
        ssl_certificate_key {certs['key']};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache off;"""
    authz = ""
    authz_loc = ""
    if scn.authz:
        authz = """
            auth_request /_ext_authz;
            auth_request_set $authz_result $upstream_http_x_ext_authz_check_result;
            proxy_set_header x-ext-authz-check-result $authz_result;"""
        authz_loc = f"""
        location = /_ext_authz {{
            internal;
            proxy_pass http://ext_authz_http$request_uri;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Host {AUTHZ_HOST};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}"""
    tmp = wd / "nginx-tmp"
    return f"""# nginx, {scn.key}: {scn.title} (generated by bench/harness.py)
daemon off;
master_process on;
worker_processes 1;
pid {wd}/nginx.pid;
error_log {wd}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream backend {{
        server 127.0.0.1:{BACKEND_PORT};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    upstream ext_authz_http {{
        server 127.0.0.1:{AUTHZ_HTTP_PORT};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        {listen};{tls}
        location / {{{authz}
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Request-Id $request_id;
        }}{authz_loc}
    }}
}}
"""


# --------------------------------------------------------------------------------------------
# Proxies under test


class Proxy:
    name = "?"

    def __init__(self, tools, wd: Path, logdir: Path, certs):
        self.tools, self.wd, self.logdir, self.certs = tools, wd, logdir, certs
        self.proc = None

    def support(self, scn: Scenario):
        """(supported, note)"""
        return True, None

    def pids(self):
        return [self.proc.pid]

    def stop(self):
        if self.proc:
            self.proc.stop()
            self.proc = None


class Authgate(Proxy):
    name = "authgate"

    def start(self, scn, tag):
        # Its own directory: authgate reloads on any change in the directory it watches.
        d = self.wd / "authgate"
        d.mkdir(exist_ok=True)
        cfg = d / f"authgate-{scn.key}.yaml"
        cfg.write_text(authgate_config(scn, self.certs))
        env = dict(os.environ, AUTHGATE_LOG="warn")
        self.proc = Proc(
            f"authgate-{tag}",
            [self.tools["authgate"], "run", "--config", cfg, "--workers", "1", "--drain-timeout", "1s"],
            self.logdir,
            CPU_PROXY,
            env=env,
        )
        wait_port(scn.port(), self.proc)


class Envoy(Proxy):
    name = "envoy"

    def __init__(self, *a, istio_shape=True):
        super().__init__(*a)
        self.istio_shape = istio_shape

    def start(self, scn, tag):
        cfg = self.wd / f"envoy-{scn.key}.json"
        cfg.write_text(json.dumps(envoy_config(scn, self.certs, self.istio_shape), indent=1))
        self.proc = Proc(
            f"envoy-{tag}",
            [
                self.tools["envoy"], "-c", cfg, "--concurrency", "1", "--disable-hot-restart",
                "-l", "warning", "--log-path", self.logdir / f"envoy-{tag}.envoy.log",
            ],
            self.logdir,
            CPU_PROXY,
        )
        wait_port(scn.port(), self.proc, timeout=30)


class Nginx(Proxy):
    name = "nginx"

    def support(self, scn):
        if scn.key == "S2":
            return False, NGINX_NO_GRPC
        if scn.authz == "grpc":
            return True, NGINX_HTTP_SUBST
        return True, None

    def start(self, scn, tag):
        (self.wd / "nginx-tmp").mkdir(exist_ok=True)
        nscn = scn
        if scn.authz == "grpc":
            nscn = Scenario(scn.key, scn.title, "http", scn.header, scn.expect, scn.tls, scn.h2)
        cfg = self.wd / f"nginx-{scn.key}.conf"
        cfg.write_text(nginx_config(nscn, self.certs, self.wd))
        self.proc = Proc(
            f"nginx-{tag}",
            [self.tools["nginx"], "-p", self.wd, "-e", self.wd / "nginx-error.log", "-c", cfg],
            self.logdir,
            CPU_PROXY,
        )
        wait_port(scn.port(), self.proc)
        # The worker is forked after the listener is bound: wait for it.
        deadline = time.monotonic() + 5
        while not children(self.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.02)

    def pids(self):
        # master + its worker(s); sum both, as the issue asks.
        return [self.proc.pid] + children(self.proc.pid)


# --------------------------------------------------------------------------------------------
# Correctness pre-check


def h1_get(scn: Scenario, header_value, certs, timeout=5.0):
    if scn.tls:
        ctx = ssl.create_default_context(cafile=str(certs["ca"]))
        conn = http.client.HTTPSConnection("127.0.0.1", scn.port(), timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", scn.port(), timeout=timeout)
    try:
        conn.request("GET", PATH, headers={"x-ext-authz": header_value})
        r = conn.getresponse()
        body = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body
    finally:
        conn.close()


def loadgen_statuses(tools, scn, header_value, certs, n_seconds=0.3):
    """h2c (and anything else) through the load generator itself: the status counts."""
    argv = loadgen_argv(tools, scn, certs, header_value, rate=0, connections=1, warmup=0, duration=n_seconds)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise RuntimeError(f"loadgen failed: {out.stderr.strip()}")
    res = parse_loadgen(out.stdout)
    return {int(k): v for k, v in res["statuses"].items()}, res


def precheck(tools, proxy_name, scn: Scenario, certs):
    """allow → 200 (and, with authz, the backend saw the service's verdict header);
    deny → 403 with authz, 200 without. Returns a list of problems (empty: correct)."""
    problems = []
    with_authz = scn.authz is not None
    cases = [("allow", 200), ("deny", 403 if with_authz else 200)]
    for value, want in cases:
        if scn.h2:
            statuses, _ = loadgen_statuses(tools, scn, value, certs)
            if set(statuses) != {want}:
                problems.append(f"h2 x-ext-authz: {value}: statuses {statuses}, want only {want}")
            continue
        status, headers, body = h1_get(scn, value, certs)
        if status != want:
            problems.append(f"x-ext-authz: {value}: status {status}, want {want}: {body[:200]!r}")
            continue
        if want == 200:
            seen = headers.get("x-backend-received-check-result")
            if with_authz and seen != "allowed":
                problems.append(f"allowed request reached the backend without the verdict header (got {seen!r})")
            if not with_authz and seen is not None:
                problems.append(f"no-authz scenario: backend saw a verdict header {seen!r}")
            if len(body) < 1000:
                problems.append(f"allowed response body is only {len(body)} bytes")
    return problems


# --------------------------------------------------------------------------------------------
# Load


def loadgen_argv(tools, scn, certs, header_value, rate, connections, warmup, duration, streams=8):
    argv = [
        "taskset", "-c", CPU_LOAD, tools["loadgen"], "--url", scn.url(), "-H", f"x-ext-authz: {header_value}",
        "--rate", str(rate), "--connections", str(connections), "--warmup", str(warmup), "--duration", str(duration),
    ]
    if scn.h2:
        argv += ["--http2", "--streams", str(streams)]
    if scn.tls:
        argv += ["--cacert", str(certs["ca"])]
    return [str(a) for a in argv]


def parse_loadgen(stdout):
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"no RESULT line in loadgen output: {stdout[-500:]!r}")


def fixed_rate(tools, scn, certs, pids_fn, args):
    """Open-loop load at args.rate; CPU of `pids_fn()` sampled exactly at the window edges."""
    argv = loadgen_argv(tools, scn, certs, scn.header, args.rate, args.connections, args.warmup, args.duration)
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    start = end = None
    lines = []
    for line in p.stdout:
        line = line.rstrip("\n")
        if line == "MEASURE_START" and pids_fn:
            start = CpuSample(pids_fn())
        elif line == "MEASURE_END" and pids_fn:
            end = CpuSample(pids_fn())
        else:
            lines.append(line)
    p.wait()
    if p.returncode != 0:
        raise RuntimeError(f"loadgen failed: {p.stderr.read().strip()}")
    res = parse_loadgen("\n".join(lines))
    out = {
        "offered_rps": res["offered_rps"],
        "achieved_rps": res["achieved_rps"],
        "responses": res["responses"],
        "statuses": res["statuses"],
        "errors": res["errors"] + res["timeouts"],
        "p50_us": res["latency_us"]["p50"],
        "p90_us": res["latency_us"]["p90"],
        "p99_us": res["latency_us"]["p99"],
        "p999_us": res["latency_us"]["p999"],
        "max_us": res["latency_us"]["max"],
    }
    unexpected = sum(v for k, v in res["statuses"].items() if int(k) != scn.expect)
    out["unexpected_status"] = unexpected
    if start and end:
        cpu = end.since(start)
        n = max(res["completed_in_window"], 1)
        out.update(
            {
                "cpu_us_per_req": cpu["cpu_s"] * 1e6 / n,
                "user_us_per_req": cpu["user_s"] * 1e6 / n,
                "sys_us_per_req": cpu["sys_s"] * 1e6 / n,
                "cpu_util_pct": 100 * cpu["cpu_s"] / cpu["wall_s"] if cpu["wall_s"] > 0 else 0,
                "cpu0_other_pct": 100 * cpu["cpu0_other_s"] / cpu["wall_s"] if cpu["wall_s"] > 0 else 0,
                "completed_in_window": res["completed_in_window"],
            }
        )
        # A proxy that could not keep up with the offered rate (its CPU saturated, responses
        # fell behind, or a median latency that only a growing queue explains on loopback) shows
        # queueing latency, not service latency: its p99 is not comparable, and the report says so.
        out["overloaded"] = bool(
            out["cpu_util_pct"] > 90
            or out["achieved_rps"] < 0.98 * out["offered_rps"]
            or out["p50_us"] > 10_000
        )
    return out


def saturation(tools, scn, pids_fn, args):
    """Closed loop, many connections: wrk (HTTP/1.1, TLS) or h2load (h2c)."""
    before = CpuSample(pids_fn()) if pids_fn else None
    if scn.h2:
        streams = max(1, args.sat_connections // args.h2_connections)
        argv = [
            "taskset", "-c", CPU_LOAD, tools["h2load"], "-c", str(args.h2_connections), "-m", str(streams),
            "-D", str(args.sat_duration), "--warm-up-time", "1", "-H", f"x-ext-authz: {scn.header}", scn.url(),
        ]
    else:
        argv = [
            "taskset", "-c", CPU_LOAD, tools["wrk"], "-t1", f"-c{args.sat_connections}", f"-d{args.sat_duration}s",
            "-H", f"x-ext-authz: {scn.header}", scn.url(),
        ]
    out = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=args.sat_duration + 60)
    after = CpuSample(pids_fn()) if pids_fn else None
    text = out.stdout
    res = {"tool": "h2load" if scn.h2 else "wrk"}
    rps = None
    if scn.h2:
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("finished in"):
                # finished in 10.00s, 12345.67 req/s, 1.23MB/s
                rps = float(line.split(",")[1].split()[0])
            if line.startswith("requests:"):
                parts = line.replace(",", "").split()
                res["requests"] = int(parts[1])
                res["failed"] = int(parts[parts.index("failed") - 1])
                res["errored"] = int(parts[parts.index("errored") - 1])
            if line.startswith("status codes:"):
                res["status_codes"] = line[len("status codes:") :].strip()
    else:
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("Requests/sec:"):
                rps = float(line.split()[1])
            if line.startswith("Non-2xx or 3xx responses:"):
                res["non_2xx"] = int(line.split(":")[1])
            if line.startswith("Socket errors:"):
                res["socket_errors"] = line[len("Socket errors:") :].strip()
    if rps is None:
        raise RuntimeError(f"{res['tool']} failed (rc {out.returncode}): {out.stderr.strip()[:500]} {text[-500:]}")
    res["rps"] = rps
    if before and after:
        cpu = after.since(before)
        res["proxy_cpu_util_pct"] = 100 * cpu["cpu_s"] / cpu["wall_s"] if cpu["wall_s"] > 0 else 0
        res["proxy_cpu_us_per_req"] = cpu["cpu_s"] * 1e6 / max(rps * cpu["wall_s"], 1)
        res["proxy_user_us_per_req"] = cpu["user_s"] * 1e6 / max(rps * cpu["wall_s"], 1)
        res["proxy_sys_us_per_req"] = cpu["sys_s"] * 1e6 / max(rps * cpu["wall_s"], 1)
        res["cpu0_other_pct"] = 100 * cpu["cpu0_other_s"] / cpu["wall_s"] if cpu["wall_s"] > 0 else 0
    return res


# --------------------------------------------------------------------------------------------
# Aggregation and reports


METRICS = [
    "cpu_us_per_req", "user_us_per_req", "sys_us_per_req", "p50_us", "p99_us", "p999_us",
    "achieved_rps", "sat_rps", "sat_proxy_cpu_util_pct", "sat_cpu_us_per_req", "sat_user_us_per_req",
    "sat_sys_us_per_req", "rss_kb", "errors",
    "unexpected_status", "cpu0_other_pct", "sat_cpu0_other_pct",
]


def median_of(rounds, key):
    vals = [r[key] for r in rounds if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt(v, digits=1):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def fmt_ratio(v):
    return "n/a" if v is None else f"{v:.2f}"


def summarize(results):
    """Medians per scenario and proxy, ratios authgate ÷ peer, summary lines."""
    lines = []
    for key, sres in results["scenarios"].items():
        for pname, pres in sres["proxies"].items():
            if pres["rounds"]:
                pres["median"] = {m: median_of(pres["rounds"], m) for m in METRICS}
                pres["overloaded_rounds"] = sum(1 for r in pres["rounds"] if r.get("overloaded"))
        if key == "S0":
            d = sres["proxies"].get("direct", {}).get("median")
            if d:
                lines.append(
                    f"bench S0 baseline p50_us={fmt(d['p50_us'])} p99_us={fmt(d['p99_us'])} rps={fmt(d['sat_rps'], 0)}"
                )
            continue
        ag = sres["proxies"].get("authgate", {}).get("median")
        sres["ratios"] = {}
        for peer in PEERS:
            pres = sres["proxies"].get(peer)
            if pres is None:
                continue
            if pres["status"] == "n/a":
                lines.append(f"bench {key} vs={peer} n/a ({pres.get('note')})")
                continue
            pm = pres.get("median")
            if not ag or not pm:
                lines.append(f"bench {key} vs={peer} n/a (no measurement: {pres['status']})")
                continue
            r = {
                "cpu_ratio": ratio(ag["cpu_us_per_req"], pm["cpu_us_per_req"]),
                "user_cpu_ratio": ratio(ag["user_us_per_req"], pm["user_us_per_req"]),
                "p99_ratio": ratio(ag["p99_us"], pm["p99_us"]),
                "rps_ratio": ratio(ag["sat_rps"], pm["sat_rps"]),
                "rss_ratio": ratio(ag["rss_kb"], pm["rss_kb"]),
            }
            sres["ratios"][peer] = r
            line = (
                f"bench {key} vs={peer} cpu_ratio={fmt_ratio(r['cpu_ratio'])} p99_ratio={fmt_ratio(r['p99_ratio'])} "
                f"rps_ratio={fmt_ratio(r['rps_ratio'])} rss_ratio={fmt_ratio(r['rss_ratio'])}"
            )
            notes = [pres["note"]] if pres.get("note") else []
            for who, p in (("authgate", sres["proxies"]["authgate"]), (peer, pres)):
                if 2 * p.get("overloaded_rounds", 0) > len(p["rounds"]):
                    notes.append(f"{who}-overloaded-at-fixed-rate")
            if notes:
                line += " note=" + ",".join(notes)
            lines.append(line)
    results["summary_lines"] = lines
    return lines


def held(pres):
    """Whether the proxy kept up with the fixed offered rate (see fixed_rate)."""
    n, bad = len(pres["rounds"]), pres.get("overloaded_rounds", 0)
    if pres["rounds"] and "overloaded" not in pres["rounds"][0]:
        return "n/a"
    return "yes" if bad == 0 else f"**no** ({bad}/{n})"


def markdown(results):
    meta = results["meta"]
    a = meta["args"]
    out = [
        "# authgate vs Envoy vs nginx — latest run",
        "",
        f"Generated by `bench/run{' --quick' if a['quick'] else ''}` on {meta['date']} "
        f"(commit `{meta['commit']}`{', dirty tree' if meta['dirty'] else ''}). "
        + ("**Quick mode: proves the harness works; the numbers mean nothing.** " if a["quick"] else "")
        + "Method: `BENCHMARKS.md`.",
        "",
    ]
    if meta.get("note"):
        out += [f"*Note: {meta['note']}.*", ""]
    out += [
        f"- Machine: {meta['machine']}; proxy pinned to CPU {CPU_PROXY} with one worker; "
        f"load generator, authz sample and backend on CPU {CPU_LOAD}.",
        f"- Versions: {meta['versions']['authgate']}; {meta['versions']['envoy']}; {meta['versions']['nginx']}; "
        f"{meta['versions']['wrk']}; {meta['versions']['h2load']}.",
        f"- Rounds: {a['rounds']} (proxies in turn, A B C A B C …), medians shown. Fixed open-loop rate "
        f"{a['rate']:g} req/s over {a['connections']} connections for {a['duration']:g} s after {a['warmup']:g} s "
        f"warm-up; saturation {a['sat_duration']:g} s with wrk -c{a['sat_connections']} "
        f"(h2: h2load -c{a['h2_connections']} -m{max(1, a['sat_connections'] // a['h2_connections'])}). "
        f"Request: `GET {PATH}` (4.7 KB response).",
        "- CPU µs/req: the proxy's on-CPU time (schedstat, all threads; nginx master + worker) in the "
        "open-loop window ÷ responses completed in it; user/sys split from /proc/PID/stat. "
        "CPU µs/req at sat: the same during the saturation run ÷ its requests (user/sys split the same way). "
        "Latency from the intended send time (open loop). RSS: VmHWM after all load (master + worker for nginx). "
        "CPU 0 noise: time CPU 0 spent on anything but the proxy during the measurement (should be ~0).",
        "",
        "| scenario | proxy | CPU µs/req | user | sys | p50 µs | p99 µs | p99.9 µs | rate held | sat req/s | CPU µs/req at sat | user at sat | sys at sat | proxy CPU % at sat | peak RSS MB | CPU 0 noise % | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    blank = " | ".join([""] * 15)
    noise = []
    for key, sres in results["scenarios"].items():
        for pname, pres in sres["proxies"].items():
            label = f"{key} {sres['title']}" if pname in ("authgate", "direct") else ""
            name = pname + (f" ({pres['note']})" if pres.get("note") and pres["status"] != "n/a" else "")
            if pres["status"] == "n/a":
                out.append(f"| {label} | {pname} | n/a ({pres.get('note')}) | {blank} |")
                continue
            m = pres.get("median")
            if not m:
                out.append(f"| {label} | {pname} | **{pres['status']}** | {blank} |")
                continue
            rss = None if m["rss_kb"] is None else m["rss_kb"] / 1024
            errs = (m["errors"] or 0) + (m["unexpected_status"] or 0)
            worst = max([v for v in (m.get("cpu0_other_pct"), m.get("sat_cpu0_other_pct")) if v is not None], default=None)
            if worst is not None:
                noise.append(worst)
            out.append(
                f"| {label} | {name} | {fmt(m['cpu_us_per_req'])} | {fmt(m['user_us_per_req'])} | {fmt(m['sys_us_per_req'])} "
                f"| {fmt(m['p50_us'], 0)} | {fmt(m['p99_us'], 0)} | {fmt(m['p999_us'], 0)} "
                f"| {held(pres)} | {fmt(m['sat_rps'], 0)} "
                f"| {fmt(m['sat_cpu_us_per_req'])} | {fmt(m.get('sat_user_us_per_req'))} | {fmt(m.get('sat_sys_us_per_req'))} "
                f"| {fmt(m['sat_proxy_cpu_util_pct'], 0)} | {fmt(rss)} | {fmt(worst, 0)} | {fmt(errs, 0)} |"
            )
    if any(p.get("overloaded_rounds") for sres in results["scenarios"].values() for p in sres["proxies"].values()):
        out += [
            "",
            "**Rate not held:** where *rate held* says no, that proxy (or CPU 0 as a whole) was saturated at the "
            "fixed rate, so its latency is queueing, not service time; its p99 ratio is flagged in the summary "
            "lines. Lower `--rate`, or run on a quiet machine.",
        ]
    if noise and max(noise) > 5:
        out += [
            "",
            f"**Noisy machine:** other work took up to {max(noise):.0f}% of CPU 0 (the proxy's CPU) during a "
            f"measurement (load average at start: {meta.get('loadavg_start', '?')}). Treat these numbers as indicative only.",
        ]
    out += [
        "",
        "## Ratios (authgate ÷ peer; < 1 is better for CPU, p99 and RSS, > 1 is better for req/s)",
        "",
        "| scenario | vs | CPU | user CPU | p99 | sat req/s | peak RSS |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for key, sres in results["scenarios"].items():
        for peer, r in sres.get("ratios", {}).items():
            note = sres["proxies"][peer].get("note")
            out.append(
                f"| {key} | {peer}{' (' + note + ')' if note else ''} | {fmt_ratio(r['cpu_ratio'])} | {fmt_ratio(r['user_cpu_ratio'])} "
                f"| {fmt_ratio(r['p99_ratio'])} | {fmt_ratio(r['rps_ratio'])} | {fmt_ratio(r['rss_ratio'])} |"
            )
    out += ["", "## Summary lines", "", "```"] + results["summary_lines"] + ["```", ""]
    failures = results.get("failures") or []
    if failures:
        out += ["## Failures", ""] + [f"- {f}" for f in failures] + [""]
    out += [
        "## Per-round values",
        "",
        "| scenario | proxy | round | CPU µs/req | p99 µs | sat req/s | RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for key, sres in results["scenarios"].items():
        for pname, pres in sres["proxies"].items():
            for r in pres["rounds"]:
                rss = None if r.get("rss_kb") is None else r["rss_kb"] / 1024
                out.append(
                    f"| {key} | {pname} | {r['round']} | {fmt(r.get('cpu_us_per_req'))} | {fmt(r.get('p99_us'), 0)} "
                    f"| {fmt(r.get('sat_rps'), 0)} | {fmt(rss)} |"
                )
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------
# Setup


def make_certs(wd: Path):
    """A throwaway CA and a P-256 server certificate for 127.0.0.1 / localhost."""
    d = wd / "tls"
    d.mkdir(exist_ok=True)

    def run(*argv):
        subprocess.run(argv, check=True, cwd=d, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("openssl", "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=authgate-bench-ca")
    run("openssl", "req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (d / "ext.cnf").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
    )
    run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    return {"ca": d / "ca.pem", "cert": d / "server.pem", "key": d / "server.key"}


def find_envoy():
    cands = [os.environ.get("ENVOY_BIN")] + sorted(glob.glob("/opt/peers/lib/python3*/site-packages/envoy/_bin/envoy"))
    for c in cands:
        if c and os.access(c, os.X_OK):
            return c
    w = shutil.which("envoy") or ("/opt/peers/bin/envoy" if os.access("/opt/peers/bin/envoy", os.X_OK) else None)
    return w


def version_of(argv, stream="stdout"):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        text = (out.stdout + out.stderr).strip()
        return text.splitlines()[0] if text else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def semver(text):
    m = re.search(r"\d+\.\d+\.\d+", text)
    return m.group(0) if m else "?"


def git(*argv):
    try:
        return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return ""


def tools_or_die(proxies):
    tools = {
        # AUTHGATE_BIN measures another build (e.g. a before/after pair for the optimisation log).
        "authgate": os.environ.get("AUTHGATE_BIN") or str(RELEASE / "authgate"),
        "loadgen": str(RELEASE / "authgate-loadgen"),
        "wrk": shutil.which("wrk"),
        "h2load": shutil.which("h2load"),
        "nginx": shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None),
        "envoy": find_envoy(),
    }
    needed = ["authgate", "loadgen", "wrk", "h2load"] + [p for p in proxies if p in ("envoy", "nginx")]
    missing = [k for k in needed if not tools.get(k) or not os.access(tools[k], os.X_OK)]
    if missing:
        sys.exit(f"bench: missing tools: {', '.join(missing)} (bench/run installs them)")
    return tools


def main():
    # `kill` (SIGTERM) unwinds like Ctrl-C: the finally blocks stop every process this run started.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a few seconds per scenario, 1 round (CI: proves the harness works)")
    ap.add_argument("--rounds", type=int, help="rounds per scenario (default 3; quick 1)")
    ap.add_argument("--rate", type=float, help="open-loop rate, req/s (default 2000; quick 1000)")
    ap.add_argument("--connections", type=int, default=32, help="connections for the open-loop phase")
    ap.add_argument("--warmup", type=float, help="seconds before the measured window (default 3; quick 0.5)")
    ap.add_argument("--duration", type=float, help="measured window, s (default 15; quick 2)")
    ap.add_argument("--sat-duration", type=int, help="saturation run, s (default 10; quick 2)")
    ap.add_argument("--sat-connections", type=int, default=32, help="wrk connections (h2: total streams)")
    ap.add_argument("--h2-connections", type=int, default=4, help="h2load connections in S6 saturation")
    ap.add_argument("--scenarios", default="S0,S1,S2,S3,S4,S5,S6")
    ap.add_argument("--proxies", default=",".join(PROXIES))
    ap.add_argument("--envoy-plain", action="store_true", help="Envoy without the RBAC shadow filter istiod adds")
    ap.add_argument("--out", default=str(BENCH / "results"), help="directory for latest.md / latest.json / raw logs")
    args = ap.parse_args()
    q = args.quick
    args.rounds = args.rounds or (1 if q else 3)
    args.rate = args.rate or (1000.0 if q else 2000.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if q else 3.0)
    args.duration = args.duration or (2.0 if q else 15.0)
    args.sat_duration = args.sat_duration or (2 if q else 10)
    scenarios = [SCENARIOS[s.strip().upper()] for s in args.scenarios.split(",") if s.strip()]
    proxies = [p.strip() for p in args.proxies.split(",") if p.strip()]
    for p in proxies:
        if p not in PROXIES:
            sys.exit(f"bench: unknown proxy {p!r}")
    if "authgate" not in proxies:
        sys.exit("bench: authgate must be among the proxies (ratios are authgate ÷ peer)")
    if os.cpu_count() and os.cpu_count() < 2:
        sys.exit("bench: needs 2 CPUs (proxy on CPU 0, everything else on CPU 1)")
    tools = tools_or_die(proxies)

    out_dir = Path(args.out)
    raw = out_dir / ("latest-quick-raw" if q else "latest-raw")
    if raw.exists():
        shutil.rmtree(raw)
    raw.mkdir(parents=True)
    wd = Path(tempfile.mkdtemp(prefix="authgate-bench."))
    logdir = raw / "logs"
    logdir.mkdir()

    busy = [p for p in (BACKEND_PORT, AUTHZ_HTTP_PORT, AUTHZ_GRPC_PORT, PROXY_PORT, TLS_PORT, ENVOY_ADMIN_PORT) if port_open(p)]
    if busy:
        sys.exit(f"bench: ports already in use: {busy} (another bench run?)")
    eph = ephemeral_port_range()
    if eph and PORT_BASE <= eph[1] and PORT_BASE + 5 >= eph[0]:
        log(f"warning: ports {PORT_BASE}-{PORT_BASE + 5} are inside the ephemeral range {eph[0]}-{eph[1]}: "
            "a connection made during the run may take one; pick BENCH_PORT_BASE below it")

    certs = make_certs(wd) if any(s.tls for s in scenarios) else {}
    meta = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git("rev-parse", "--short", "HEAD") or "?",
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, Linux {platform.release()}",
        "versions": {
            "authgate": "authgate " + (version_of([tools["authgate"], "--version"]).split()[-1]),
            "envoy": "envoy " + (semver(version_of([tools["envoy"], "--version"])) if tools.get("envoy") else "?"),
            "nginx": version_of([tools["nginx"], "-v"]).replace("nginx version: ", "") if tools.get("nginx") else "nginx ?",
            "wrk": version_of([tools["wrk"], "-v"]).split(" [")[0],
            "h2load": "h2load " + version_of([tools["h2load"], "--version"]).split()[-1],
        },
        "args": vars(args),
        "loadavg_start": open("/proc/loadavg").read().split()[0],
    }
    results = {"meta": meta, "scenarios": {}, "failures": []}
    services = []
    t_start = time.monotonic()
    try:
        log(f"workdir {wd}; raw logs in {raw}")
        backend = Proc("backend", [tools["authgate"], "backend", "--port", BACKEND_PORT], logdir, CPU_LOAD)
        authz = Proc(
            "ext-authz",
            [tools["authgate"], "ext-authz", "--http", AUTHZ_HTTP_PORT, "--grpc", AUTHZ_GRPC_PORT],
            logdir,
            CPU_LOAD,
            quiet=True,  # the sample logs every check (to stderr), as Istio's does: GBs per run
        )
        services = [backend, authz]
        wait_port(BACKEND_PORT, backend)
        wait_port(AUTHZ_HTTP_PORT, authz)
        wait_port(AUTHZ_GRPC_PORT, authz)

        impls = {
            "authgate": Authgate(tools, wd, logdir, certs),
            "envoy": Envoy(tools, wd, logdir, certs, istio_shape=not args.envoy_plain),
            "nginx": Nginx(tools, wd, logdir, certs),
        }
        for scn in scenarios:
            sres = {"title": scn.title, "proxies": {}}
            results["scenarios"][scn.key] = sres
            if scn.direct:
                pres = sres["proxies"]["direct"] = {"status": "ok", "rounds": []}
                for rnd in range(1, args.rounds + 1):
                    log(f"{scn.key} direct round {rnd}")
                    r = {"round": rnd}
                    r.update(fixed_rate(tools, scn, certs, None, args))
                    s = saturation(tools, scn, None, args)
                    r["sat_rps"] = s["rps"]
                    r["sat"] = s
                    r["rss_kb"] = None
                    pres["rounds"].append(r)
                continue
            for p in proxies:
                ok, note = impls[p].support(scn)
                sres["proxies"][p] = {"status": "ok" if ok else "n/a", "note": note, "rounds": []}
            for rnd in range(1, args.rounds + 1):
                for p in proxies:
                    pres = sres["proxies"][p]
                    if pres["status"] != "ok":
                        continue
                    impl = impls[p]
                    tag = f"{scn.key}-r{rnd}"
                    log(f"{scn.key} {p} round {rnd}")
                    try:
                        ensure_free(scn.port())
                        impl.start(scn, tag)
                        problems = precheck(tools, p, scn, certs)
                        if problems:
                            pres["status"] = "failed pre-check"
                            msg = f"{scn.key} {p}: pre-check failed: " + "; ".join(problems)
                            results["failures"].append(msg)
                            log(msg)
                            continue
                        r = {"round": rnd}
                        r.update(fixed_rate(tools, scn, certs, impl.pids, args))
                        s = saturation(tools, scn, impl.pids, args)
                        r["sat_rps"] = s["rps"]
                        r["sat_proxy_cpu_util_pct"] = s.get("proxy_cpu_util_pct")
                        r["sat_cpu_us_per_req"] = s.get("proxy_cpu_us_per_req")
                        r["sat_user_us_per_req"] = s.get("proxy_user_us_per_req")
                        r["sat_sys_us_per_req"] = s.get("proxy_sys_us_per_req")
                        r["sat_cpu0_other_pct"] = s.get("cpu0_other_pct")
                        r["sat"] = s
                        r["rss_kb"] = sum(vm_hwm_kb(pid) for pid in impl.pids())
                        if not impl.proc.alive():
                            raise RuntimeError(f"{p} died during the run:\n{impl.proc.tail()}")
                        pres["rounds"].append(r)
                        log(
                            f"  cpu {fmt(r.get('cpu_us_per_req'))} µs/req (user {fmt(r.get('user_us_per_req'))}, "
                            f"sys {fmt(r.get('sys_us_per_req'))}), p99 {fmt(r['p99_us'], 0)} µs, "
                            f"sat {fmt(r['sat_rps'], 0)} req/s ({fmt(r.get('sat_cpu_us_per_req'))} µs/req: user "
                            f"{fmt(r.get('sat_user_us_per_req'))}, sys {fmt(r.get('sat_sys_us_per_req'))}), rss {r['rss_kb'] / 1024:.1f} MB, "
                            f"errors {r['errors']}, unexpected {r['unexpected_status']}"
                        )
                        if r["errors"] or r["unexpected_status"]:
                            results["failures"].append(
                                f"{scn.key} {p} round {rnd}: {r['errors']} errors, {r['unexpected_status']} unexpected statuses "
                                f"({r['statuses']})"
                            )
                    except Exception as e:  # noqa: BLE001 - reported, the run goes on
                        pres["status"] = f"failed: {e}".splitlines()[0]
                        results["failures"].append(f"{scn.key} {p} round {rnd}: {e}")
                        log(f"  FAILED: {e}")
                    finally:
                        impl.stop()
                for svc in services:
                    if not svc.alive():
                        raise RuntimeError(f"{svc.name} died:\n{svc.tail()}")
    finally:
        for svc in services:
            svc.stop()
        # Keep the generated configs with the raw logs.
        for f in list(wd.glob("*.*")) + list(wd.glob("authgate/*.yaml")):
            if f.suffix in (".yaml", ".json", ".conf"):
                shutil.copy(f, raw / f.name)
        shutil.rmtree(wd, ignore_errors=True)

    results["meta"]["elapsed_s"] = round(time.monotonic() - t_start, 1)
    lines = summarize(results)
    stem = "latest-quick" if q else "latest"
    (out_dir / f"{stem}.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (out_dir / f"{stem}.md").write_text(markdown(results))
    print()
    for line in lines:
        print(line)
    print()
    log(f"wrote {out_dir / (stem + '.md')} and {stem}.json in {results['meta']['elapsed_s']} s")
    if results["failures"]:
        log("FAILURES:\n  " + "\n  ".join(results["failures"]))
        sys.exit(1)


if __name__ == "__main__":
    main()
