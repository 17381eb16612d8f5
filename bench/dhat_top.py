#!/usr/bin/env python3
"""Allocation sites per request from two DHAT profiles of the same scenario (N and 2N requests,
as bench/profile writes them): the difference removes start-up allocations exactly.

    bench/dhat_top.py bench/results/profile-S2/dhat-2000.out bench/results/profile-S2/dhat-4000.out [--top 25]

Each site is named by its first frame inside authgate's own crates (or, failing that, the first
frame outside the allocator), with the full short stack available via --stacks.
"""

import collections
import json
import re
import sys

SKIP = re.compile(r"UnknownInlinedFun|alloc::|__rust|<alloc::|core::ptr|malloc|realloc|calloc|RawVec|raw_vec|finish_grow|do_reserve|reserve|with_capacity|exchange_malloc|::new\b|bytes::bytes_mut::BytesMut::(reserve|extend)|__rdl|std::alloc")
OURS = re.compile(r"authgate_\w+::")


def load(path):
    d = json.load(open(path))
    ftbl = d["ftbl"]
    sites = collections.Counter()
    bytes_ = collections.Counter()
    stacks = {}
    for pp in d["pps"]:
        frames = [ftbl[i] for i in pp["fs"]]
        names = [re.sub(r"^0x[0-9A-F]+: ", "", f) for f in frames]
        names = [re.sub(r" \(.*$", "", n) for n in names]
        ours = next((n for n in names if OURS.search(n)), None)
        first = next((n for n in names if not SKIP.search(n)), names[-1] if names else "?")
        key = f"{first}   [in {ours}]" if ours and ours != first else first
        sites[key] += pp["tbk"]  # total blocks
        bytes_[key] += pp["tb"]  # total bytes
        stacks.setdefault(key, names[:10])
    return sites, bytes_, stacks


def main():
    args = sys.argv[1:]
    if len(args) < 2 or "-h" in args:
        print(__doc__)
        return
    top = int(args[args.index("--top") + 1]) if "--top" in args else 25
    small, large = args[0], args[1]
    n_small = int(re.search(r"(\d+)\.out$", small).group(1))
    n_large = int(re.search(r"(\d+)\.out$", large).group(1))
    s1, b1, _ = load(small)
    s2, b2, stacks = load(large)
    d = n_large - n_small
    per = {k: (s2[k] - s1.get(k, 0)) / d for k in s2}
    per_b = {k: (b2[k] - b1.get(k, 0)) / d for k in b2}
    total = sum(per.values())
    print(f"{total:.1f} allocations/request, {sum(per_b.values()):,.0f} bytes/request ({n_small} vs {n_large} requests)")
    print(f"{'allocs':>7} {'bytes':>7}  site   [first authgate frame]")
    for k, v in sorted(per.items(), key=lambda kv: -kv[1])[:top]:
        if v < 0.05:
            break
        print(f"{v:7.2f} {per_b[k]:7.0f}  {k[:200]}")
        if "--stacks" in args:
            for f in stacks[k]:
                print(f"           {f[:160]}")


if __name__ == "__main__":
    main()
