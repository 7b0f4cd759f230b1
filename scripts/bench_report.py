"""Turns scripts/bench.sh's results into docs/benchmarks.json and
docs/benchmarks.md: the machine, the versions, the settings, every figure
with its ratio to the proxied ceiling, and the targets met or missed.

Each figure's target comes with it from bench.sh: {"share": 0.7} is a share
of the proxied ceiling; {"share": 0.85, "rps": 52.6, "of": "..."} a share of
a bound of its own, named by "of". BENCH_LIFTED names the settings raised for
the run and BENCH_NOTES (one per line) says more about it; both go into the
report as they are.

In smoke mode (make test) it checks that every figure ran without an error
and writes the report to a scratch directory; it never judges speed there.

`python3 scripts/bench_report.py --render` writes docs/benchmarks.md again
from docs/benchmarks.json, after an edit to docs/benchmarks-notes.md.
"""

import json
import os
import platform
import re
import subprocess
import sys
from datetime import datetime, timezone

def run(*command):
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def machine():
    model = "unknown"
    memory_kib = 0
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as meminfo:
            memory_kib = int(meminfo.readline().split()[1])
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
    }


def versions():
    pg_bin = run("scripts/services.sh", "pg-bin")
    return {
        "rustc": run("rustc", "--version"),
        "nginx": run("nginx", "-v").replace("nginx version: ", ""),
        "postgresql": run(os.path.join(pg_bin, "postgres"), "--version"),
        "redis": re.sub(r" sha=.*", "", run("redis-server", "--version")),
        "wrk": re.sub(r" \[.*", "", run("wrk", "--version")),
    }


def main():
    if sys.argv[1:] == ["--render"]:
        with open("docs/benchmarks.json") as file:
            report = json.load(file)
        with open("docs/benchmarks.md", "w") as file:
            file.write(markdown(report))
        return 0
    smoke = os.environ["BENCH_SMOKE"] == "1"
    with open(os.environ["BENCH_RESULTS"]) as lines:
        figures = [json.loads(line) for line in lines if line.strip()]
    by_name = {figure["name"]: figure for figure in figures}
    ceiling = by_name["nginx proxying to nginx"]["wrk"]["rps"]
    for figure in figures:
        figure["ratio_to_proxied_ceiling"] = round(figure["wrk"]["rps"] / ceiling, 3) if ceiling else None

    settings = {
        "workers": int(os.environ["WORKERS"]),
        "database_pool_size": int(os.environ["DATABASE_POOL_SIZE"]),
        "pool_total": int(os.environ["WORKERS"]) * int(os.environ["DATABASE_POOL_SIZE"]),
        "wrk_threads": int(os.environ["BENCH_THREADS"]),
        "wrk_connections": int(os.environ["BENCH_CONNECTIONS"]),
        "seconds_per_figure": int(os.environ["BENCH_DURATION"]),
        "lifted": {name: os.environ.get(name) for name in os.environ.get("BENCH_LIFTED", "").split()},
        "log_level": os.environ.get("RUST_LOG", "info"),
    }

    checks = []
    for figure in figures:
        target = figure.get("target")
        if not target:
            continue
        if "rps" in target:
            reached = figure["wrk"]["rps"] / target["rps"]
            label = f"{target['of']} ({target['rps']:.0f}/s)"
        else:
            reached = figure["ratio_to_proxied_ceiling"]
            label = "the proxied ceiling"
        checks.append({"target": f"{figure['name']} >= {target['share']:.0%} of {label}",
                       "value": f"{reached:.0%}", "met": reached >= target["share"]})
    errors = sum(f["wrk"]["non_2xx"] + f["wrk"]["socket_errors"] for f in figures)
    checks.append({"target": "no non-2xx answer and no socket error", "value": str(errors), "met": errors == 0})
    peak_pg = max((f["peak_pg_connections"] or 0) for f in figures)
    checks.append({"target": f"PostgreSQL connections <= pool total ({settings['pool_total']})",
                   "value": str(peak_pg), "met": peak_pg <= settings["pool_total"]})

    report = {
        "when": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "versions": versions(),
        "settings": settings,
        "notes": [line for line in os.environ.get("BENCH_NOTES", "").splitlines() if line],
        "figures": figures,
        "targets": checks,
    }
    out = os.environ["BENCH_OUT"]
    with open(os.path.join(out, "benchmarks.json"), "w") as file:
        json.dump(report, file, indent=2)
        file.write("\n")
    with open(os.path.join(out, "benchmarks.md"), "w") as file:
        file.write(markdown(report))

    if smoke:
        broken = [f["name"] for f in figures if f["wrk"]["requests"] == 0
                  or f["wrk"]["non_2xx"] or f["wrk"]["socket_errors"]]
        if broken:
            print("bench: these figures failed: " + ", ".join(broken), file=sys.stderr)
            return 1
        print(f"bench: smoke run of {len(figures)} figures passed (no timing is judged)")
        return 0
    for check in checks:
        print(f"bench: {'met   ' if check['met'] else 'MISSED'} {check['target']}: {check['value']}")
    print(f"bench: wrote {out}/benchmarks.md and {out}/benchmarks.json")
    return 0


def markdown(report):
    m, v, s = report["machine"], report["versions"], report["settings"]
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (scripts/bench.sh); the text under \"Reading",
        "the figures\" is kept by hand in docs/benchmarks-notes.md and copied in.",
        "",
        f"Run {report['when']} on {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}.",
        f"{v['rustc']}; nginx {v['nginx']}; {v['postgresql']}; {v['redis']}; {v['wrk']}.",
        "",
        f"Settings: {s['workers']} workers, DATABASE_POOL_SIZE={s['database_pool_size']} "
        f"(pool total {s['pool_total']}), RUST_LOG={s['log_level']}; wrk with {s['wrk_threads']} threads, "
        f"{s['wrk_connections']} connections, {s['seconds_per_figure']} s a figure after a warm-up, "
        "all on this one machine over loopback.",
    ]
    if s["lifted"]:
        lifted = ", ".join(f"{name}={value}" for name, value in s["lifted"].items())
        lines.append(f"Rate limits lifted for the run: {lifted}.")
    lines += report["notes"]
    lines += [
        "",
        "| figure | through | requests/s | p50 ms | p99 ms | non-2xx | peak RSS MiB | peak PG conns | vs proxied ceiling |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for f in report["figures"]:
        w = f["wrk"]
        rss = f"{f['peak_rss_kib'] / 1024:.0f}" if f["peak_rss_kib"] is not None else "—"
        pg = str(f["peak_pg_connections"]) if f["peak_pg_connections"] is not None else "—"
        ratio = f"{f['ratio_to_proxied_ceiling']:.0%}" if f["ratio_to_proxied_ceiling"] is not None else "—"
        through = {"ceiling": "nginx only", "nginx": "nginx", "direct": "service's port"}[f["kind"]]
        lines.append(f"| {f['name']} | {through} | {w['rps']:.0f} | {w['p50_ms']:.2f} | {w['p99_ms']:.2f} | "
                     f"{w['non_2xx'] + w['socket_errors']} | {rss} | {pg} | {ratio} |")
    lines += ["", "| target | this run | |", "|---|---:|---|"]
    for check in report["targets"]:
        lines.append(f"| {check['target']} | {check['value']} | {'met' if check['met'] else '**missed**'} |")
    lines.append("")
    notes = "docs/benchmarks-notes.md"
    if os.path.exists(notes):
        with open(notes) as file:
            lines += [file.read().rstrip(), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
