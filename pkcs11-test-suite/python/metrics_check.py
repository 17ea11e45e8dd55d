#!/usr/bin/env python3
"""The metrics files and the audit trail the other clients of this part left behind.

Every client process ran with `[metrics] path = ".../{pid}.prom"` and one `[audit] path`. Each
metrics file must parse with the Prometheus project's own parser of the text exposition format
(prometheus_client), with the families and types docs/configuration.md promises and histograms
that hold together; the counts must show what the clients did; the audit trail, appended by
every process, must verify with `b4ae-pkcs11 audit verify`.

Usage: metrics_check.py MODULE SLOTS METRICS_DIR AUDIT_FILE ADMIN_TOOL
"""

import json
import os
import subprocess
import sys

from prometheus_client.parser import text_string_to_metric_families

from common import Tally, require

FAMILIES = {
    "b4ae_pkcs11_calls": "counter",
    "b4ae_pkcs11_call_duration_seconds": "histogram",
    "b4ae_pkcs11_operations": "counter",
    "b4ae_pkcs11_key_cache": "counter",
    "b4ae_pkcs11_sessions": "gauge",
}


def parse_all(directory):
    parsed = {}
    for name in sorted(os.listdir(directory)):
        if name.endswith(".prom"):
            with open(os.path.join(directory, name), encoding="utf-8") as f:
                parsed[name] = list(text_string_to_metric_families(f.read()))
    # pykcs11_client, python_pkcs11_client and threads_client (crosscheck.py has a configuration
    # of its own).
    require(len(parsed) >= 3, f"{len(parsed)} files; every client process writes one")
    return parsed


def samples(families, sample_name):
    return [s for f in families for s in f.samples if s.name == sample_name]


def types_of(parsed):
    for name, families in parsed.items():
        types = {f.name: f.type for f in families}
        for family, kind in FAMILIES.items():
            require(types.get(family) == kind, f"{name}: {family} is {types.get(family)}, not {kind}")
    return f"{len(FAMILIES)} families in each file"


def histograms_hold(parsed):
    checked = 0
    for name, families in parsed.items():
        by_function = {}
        for s in samples(families, "b4ae_pkcs11_call_duration_seconds_bucket"):
            by_function.setdefault(s.labels["function"], []).append((float(s.labels["le"]), s.value))
        counts = {
            s.labels["function"]: s.value
            for s in samples(families, "b4ae_pkcs11_call_duration_seconds_count")
        }
        calls = {}
        for s in samples(families, "b4ae_pkcs11_calls_total"):
            calls[s.labels["function"]] = calls.get(s.labels["function"], 0) + s.value
        for function, buckets in by_function.items():
            buckets.sort()
            values = [v for _, v in buckets]
            require(values == sorted(values), f"{name} {function}: buckets not cumulative")
            require(buckets[-1][0] == float("inf"), f"{name} {function}: no +Inf bucket")
            require(values[-1] == counts[function], f"{name} {function}: +Inf != count")
            require(counts[function] == calls[function], f"{name} {function}: count != calls")
            checked += 1
    return f"{checked} histograms"


def signatures_counted(parsed):
    per_file = [
        sum(
            s.value
            for s in samples(families, "b4ae_pkcs11_calls_total")
            if s.labels["function"] == "C_Sign" and s.labels["rv"] == "CKR_OK"
        )
        for families in parsed.values()
    ]
    require(max(per_file) >= 100, f"C_Sign CKR_OK per file: {per_file}")
    return f"C_Sign CKR_OK per process: {sorted(int(n) for n in per_file)}"


def operations_by_mechanism(parsed):
    seen = set()
    for families in parsed.values():
        for s in samples(families, "b4ae_pkcs11_operations_total"):
            if s.labels["rv"] == "CKR_OK" and s.value > 0:
                seen.add((s.labels["operation"], s.labels["mechanism"]))
    for wanted in [
        ("sign", "CKM_ML_DSA"),
        ("verify", "CKM_ML_DSA"),
        ("sign", "CKM_B4AE_DILITHIUM5"),
        ("sign", "CKM_B4AE_HYBRID"),
        ("generate_key_pair", "CKM_ML_DSA_KEY_PAIR_GEN"),
    ]:
        require(wanted in seen, f"no {wanted} in {sorted(seen)}")
    return f"{len(seen)} (operation, mechanism) pairs"


def refusals_counted(parsed):
    for families in parsed.values():
        for s in samples(families, "b4ae_pkcs11_calls_total"):
            if s.labels["rv"] == "CKR_SIGNATURE_INVALID" and s.value > 0:
                return f"{s.labels['function']}: {int(s.value)} CKR_SIGNATURE_INVALID"
    raise AssertionError("no CKR_SIGNATURE_INVALID counted, yet the clients verify tampered signatures")


def cache_hits(parsed):
    hits = sum(
        s.value
        for families in parsed.values()
        for s in samples(families, "b4ae_pkcs11_key_cache_total")
        if s.labels["result"] == "hit"
    )
    require(hits > 0, "no sealed key was ever found in the cache")
    return f"{int(hits)} hits"


def audit_verifies(admin, trail):
    result = subprocess.run([admin, "audit", "verify", trail], capture_output=True, text=True)
    require(result.returncode == 0, f"{result.stdout}{result.stderr}")
    return result.stdout.strip()


def audit_events(trail):
    with open(trail, encoding="utf-8") as f:
        lines = [json.loads(line) for line in f]
    pids = {line["pid"] for line in lines if line["event"] == "login_ok"}
    events = {line["event"] for line in lines}
    require(len(pids) >= 3, f"logins from {len(pids)} processes")
    require({"login_ok", "key_created"} <= events, f"events: {sorted(events)}")
    return f"{len(lines)} lines, logins from {len(pids)} processes"


def main():
    directory, trail, admin = sys.argv[3], sys.argv[4], sys.argv[5]
    tally = Tally()
    parsed = tally.run("metrics: every client's file parses with prometheus_client", parse_all, directory)
    if parsed:
        tally.run("metrics: each family has its type", types_of, parsed)
        tally.run("metrics: histograms are cumulative, +Inf = count = calls", histograms_hold, parsed)
        tally.run("metrics: signatures counted by function and CKR_", signatures_counted, parsed)
        tally.run("metrics: operations counted by mechanism", operations_by_mechanism, parsed)
        tally.run("metrics: refusals counted by their CKR_", refusals_counted, parsed)
        tally.run("metrics: sealed keys served from the cache", cache_hits, parsed)
    else:
        for _ in range(6):
            tally.run("metrics: (no files to check)", lambda: require(False, "no metrics files"))
    tally.run("audit: the trail of every client verifies", audit_verifies, admin, trail)
    tally.run("audit: security events from several processes", audit_events, trail)
    print("# metrics_check done", flush=True)
    return tally.exit()


if __name__ == "__main__":
    sys.exit(main())
