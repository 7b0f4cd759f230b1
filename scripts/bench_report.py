"""Turns scripts/bench.sh's results into docs/benchmarks.json and
docs/benchmarks.md: the commit measured, the machine, the versions, the
settings, every figure's median over the rounds with its spread and its
ratio to the proxied ceiling, and the targets met or missed.

Every figure is measured once a round (BENCH_ROUNDS of them); a ratio is
taken within one round, and the report gives the median of a figure's
rounds with the lowest and highest beside it. A target is judged on the
median. A figure held to a reference is held to the mean of the two slices
of it measured just before and just after it (its "beside", or
"beside_p99" for a latency); a reference's slices in a round add up to its
figure for that round (add_up_slices). Each figure's target comes with it
from bench.sh:
  {"share": 0.8}                   of the proxied ceiling
  {"share": 0.5, "of": "NAME"}     of figure NAME's requests/s (a ceiling,
                                   pgbench, or a bound such as cores / hash time)
  {"max_rss_mib": 150}             peak RSS of the master and its processes
  {"p99_at_most": 2, "of": "NAME"} p99 at most twice figure NAME's
BENCH_LIFTED names the settings raised for the run and BENCH_NOTES (one per
line) says more about it; both go into the report as they are.

In smoke mode (make test) it checks that every figure ran without an error
and writes the report to a scratch directory; it never judges speed there.

`python3 scripts/bench_report.py --render` writes docs/benchmarks.md again
from docs/benchmarks.json, after an edit to docs/benchmarks-notes.md;
`--self-test` checks the arithmetic above on made-up figures (make test).
`--explain NGINX_LOG SERVICE_LOG` says what the answers that were not 2xx
were (bench.sh, on its way out).
"""

import json
import math
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


PROXIED_CEILING = "nginx proxying to nginx"


def median(values):
    values = sorted(values)
    if not values:
        return None
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def rps(figure):
    return figure["wrk"]["rps"] if figure.get("wrk") else None


def reference(beside, base, key="rps"):
    """What a figure is held to: the mean of the two slices of its reference
    taken just before and just after it (bench.sh's BESIDE), or else, for a
    figure without them, its reference's figure in the same round (`base`).
    `key` is what is compared: requests/s, or p99."""
    if beside:
        return sum(beside) / len(beside)
    return base["wrk"].get(key) if base and base.get("wrk") else None


# What a figure's target holds it to, and the slices of that reference it
# must have beside it.
BESIDE_OF = {"share": "beside", "p99_at_most": "beside_p99"}


def not_held(figures):
    """The names of figures with a target but without the slices of its
    reference around them: bench.sh left them out, and the report would
    hold them to a reference from another minute."""
    return sorted({f["name"] for f in figures for kind, key in BESIDE_OF.items()
                   if kind in (f.get("target") or {}) and not f.get(key)})


def add_ratios(figures):
    """Each figure's ratio to the proxied ceiling: to the slices around it
    if it is held to that ceiling, else to its round's."""
    ceilings = {f["round"]: f for f in figures if f["name"] == PROXIED_CEILING}
    for figure in figures:
        held = "of" not in (figure.get("target") or {})
        ceiling = reference(figure.get("beside") if held else None, ceilings.get(figure["round"]))
        # Unrounded: targets are judged on it, and rounding could carry
        # 0.4996 over 0.5 (the report rounds what it shows, away from the
        # target).
        figure["ratio_to_proxied_ceiling"] = (rps(figure) / ceiling
                                              if ceiling and rps(figure) is not None else None)
    return figures


def add_up_slices(figures):
    """One figure a round for each reference measured in slices: requests
    and seconds added up, requests/s, p50 and p99 the slices' means (as a
    figure is held to). The figures keep their order, a reference's at its
    first slice."""
    merged = []
    parts = {}
    for figure in figures:
        if not figure.get("slice"):
            merged.append(figure)
            continue
        key = (figure["round"], figure["name"])
        if key not in parts:
            parts[key] = []
            merged.append(key)
        parts[key].append(figure)
    result = []
    for entry in merged:
        if isinstance(entry, dict):
            result.append(entry)
            continue
        slices = parts[entry]
        figure = {k: v for k, v in slices[0].items() if k != "slice"}
        measured = [f["wrk"] for f in slices]
        mean = lambda key: (sum(m[key] for m in measured) / len(measured)
                            if all(m.get(key) is not None for m in measured) else None)
        total = lambda key: (sum(m[key] for m in measured)
                             if all(m.get(key) is not None for m in measured) else None)
        figure["wrk"] = {
            "requests": total("requests"),
            "seconds": total("seconds"),
            "rps": round(mean("rps"), 1),
            "p50_ms": mean("p50_ms"),
            "p99_ms": mean("p99_ms"),
            "non_2xx": total("non_2xx"),
            "socket_errors": total("socket_errors"),
            "slices": [m["rps"] for m in measured],
        }
        result.append(figure)
    return result


def summarize(figures):
    """One entry a figure name, in the order first measured: the rounds'
    figures, and their medians."""
    names = []
    rounds = {}
    for figure in figures:
        if figure["name"] not in rounds:
            names.append(figure["name"])
            rounds[figure["name"]] = []
        rounds[figure["name"]].append(figure)
    summary = []
    for name in names:
        each = rounds[name]
        first = each[0]
        entry = {"name": name, "kind": first["kind"], "url": first["url"], "method": first["method"],
                 "rounds": len(each), "target": first.get("target")}
        measured = [f for f in each if f.get("wrk")]
        if measured:
            for key in ("rps", "p50_ms", "p99_ms"):
                values = [f["wrk"][key] for f in measured if f["wrk"].get(key) is not None]
                entry[key] = median(values)
                entry[key + "_spread"] = [min(values), max(values)] if values else None
            entry["errors"] = sum(f["wrk"]["non_2xx"] + f["wrk"]["socket_errors"] for f in measured)
            ratios = [f["ratio_to_proxied_ceiling"] for f in measured if f.get("ratio_to_proxied_ceiling") is not None]
            entry["ratio_to_proxied_ceiling"] = median(ratios)
            entry["ratio_spread"] = [min(ratios), max(ratios)] if ratios else None
        rss = [f["peak_rss_kib"] for f in each if f["peak_rss_kib"] is not None]
        entry["peak_rss_kib"] = max(rss) if rss else None
        entry["median_rss_kib"] = median(rss)
        pss = [f["pss_kib"] for f in each if f.get("pss_kib") is not None]
        entry["pss_kib"] = max(pss) if pss else None
        pg = [f["peak_pg_connections"] for f in each if f["peak_pg_connections"] is not None]
        entry["peak_pg_connections"] = max(pg) if pg else None
        summary.append(entry)
    return summary


# A value is shown rounded away from its target's side, so that a value
# that misses never reads as one that meets it: 49.6% of an "at least 50%"
# shows as 49%, not 50%; 30.2 MiB of an "at most 30" as 31 MiB. DIGITS is
# the decimals FORMAT keeps of the value as it is compared (a share's
# "{:.0%}" keeps two: 0.49). The small nudge keeps a value that is exactly
# on a step (0.29, whose float is a hair under) on it.
def shown_down(format_, digits):
    return lambda v: format_.format(math.floor(v * 10**digits + 1e-9) / 10**digits)


def shown_up(format_, digits):
    return lambda v: format_.format(math.ceil(v * 10**digits - 1e-9) / 10**digits)


def judge(figures):
    """Each target, its value in each round and the median, met or not."""
    by_round = {}
    for figure in figures:
        by_round.setdefault(figure["round"], {})[figure["name"]] = figure
    checks = {}
    order = []
    for figure in figures:
        target = figure.get("target")
        if not target:
            continue
        same_round = by_round[figure["round"]]
        found = []
        if "max_rss_mib" in target and figure["peak_rss_kib"] is not None:
            found.append((f"{figure['name']}: RSS of the master and its processes <= {target['max_rss_mib']} MiB",
                          figure["peak_rss_kib"] / 1024, lambda v, t=target: v <= t["max_rss_mib"],
                          shown_up("{:.0f} MiB", 0)))
        if "p99_at_most" in target:
            base_p99 = reference(figure.get("beside_p99"), same_round.get(target["of"]), "p99_ms")
            if base_p99 and figure.get("wrk"):
                found.append((f"{figure['name']}: p99 <= {target['p99_at_most']:g}x that of {target['of']}",
                              figure["wrk"]["p99_ms"] / base_p99,
                              lambda v, t=target: v <= t["p99_at_most"], shown_up("{:.2f}x", 2)))
        if "share" in target and figure.get("wrk"):
            if "of" in target:
                base = reference(figure.get("beside"), same_round.get(target["of"]))
                value = rps(figure) / base if base else 0.0
                label = target["of"]
            else:
                value, label = figure.get("ratio_to_proxied_ceiling") or 0.0, "the proxied ceiling"
            found.append((f"{figure['name']} >= {target['share']:.0%} of {label}", value,
                          lambda v, t=target: v >= t["share"], shown_down("{:.0%}", 2)))
        for name, value, passes, shown in found:
            if name not in checks:
                order.append(name)
                checks[name] = {"target": name, "values": [], "passes": passes, "shown": shown}
            checks[name]["values"].append(value)
    result = []
    for name in order:
        check = checks[name]
        middle = median(check["values"])
        result.append({
            "target": name,
            "value": check["shown"](middle),
            "rounds": [check["shown"](v) for v in check["values"]],
            "met": bool(check["passes"](middle)),
        })
    errors = sum(f["wrk"]["non_2xx"] + f["wrk"]["socket_errors"] for f in figures if f.get("wrk"))
    result.append({"target": "no non-2xx answer and no socket error", "value": str(errors), "rounds": [],
                   "met": errors == 0})
    return result


# Lines of each kind `explain` shows.
SHOWN = 10


class Kept:
    """How many lines matched, and the first SHOWN of them."""

    def __init__(self, heading):
        self.heading, self.count, self.lines = heading, 0, []

    def add(self, line):
        self.count += 1
        if len(self.lines) < SHOWN:
            self.lines.append(line.rstrip())

    def said(self):
        if not self.count:
            return []
        return [f"bench: {self.heading}: {self.count} (up to {SHOWN} below)"] + [f"  {line}" for line in self.lines]


def explain(nginx_log, service_log):
    """The answers that were not 2xx, which the report counts (wrk counts 4xx
    and 5xx; nginx logs 499 for each connection wrk closes at the end of a
    figure): which they were, the service's lines of each, and the warnings
    and errors nginx and the service logged (a 502 is nginx's, its cause only
    in nginx's error lines). The report says how many; this says why. Only
    answers through nginx are seen. Nothing when every answer was 2xx."""
    failed = Kept("answers not 2xx in nginx's log")
    nginx = Kept("nginx's warnings and errors")
    ids = []
    try:
        with open(nginx_log, errors="replace") as log:
            for line in log:
                if re.search(r"\[(warn|error|crit|alert|emerg)\]", line):
                    nginx.add(line)
                # Most lines are 2xx: parsed only when they may not be.
                elif re.search(r'"status":[45]', line) and '"status":499' not in line:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue
                    failed.add(line)
                    if entry.get("request_id") and len(ids) < SHOWN:
                        ids.append(entry["request_id"])
    except OSError:
        return []
    if not failed.count:
        return []
    requests = Kept("the service's lines of those requests")
    service = Kept("the service's warnings and errors")
    try:
        with open(service_log, errors="replace") as log:
            for line in log:
                if any(request_id in line for request_id in ids):
                    requests.add(line)
                elif " WARN " in line or " ERROR " in line:
                    service.add(line)
    except OSError:
        pass
    return failed.said() + requests.said() + nginx.said() + service.said()


def explain_self_test():
    """What `explain` picks out of an nginx log and a service log."""
    import tempfile
    with tempfile.TemporaryDirectory() as scratch:
        def written(name, *lines):
            path = os.path.join(scratch, name)
            with open(path, "w") as file:
                file.write("".join(line + "\n" for line in lines))
            return path
        answer = '{{"request_id":"{}","uri":"/setName","status":{}}}'.format
        cut = "2026/11/30 20:32:59 [error] 7#7: *9 upstream prematurely closed connection"
        nginx_log = written("nginx.log", answer("a1", 200), answer("b2", 499), answer("c3", 502),
                            cut, answer("d4", 401))
        service_log = written("api.log", "Z  INFO request{request_id=a1}: answered status=200",
                              "Z  WARN app::server::master: worker died; replacing it",
                              "Z ERROR request{request_id=d4}: request failed", "Z  INFO nothing to see")
        said = explain(nginx_log, service_log)
        assert said == [
            "bench: answers not 2xx in nginx's log: 2 (up to 10 below)",
            "  " + answer("c3", 502), "  " + answer("d4", 401),
            "bench: the service's lines of those requests: 1 (up to 10 below)",
            "  Z ERROR request{request_id=d4}: request failed",
            "bench: nginx's warnings and errors: 1 (up to 10 below)", "  " + cut,
            "bench: the service's warnings and errors: 1 (up to 10 below)",
            "  Z  WARN app::server::master: worker died; replacing it",
        ], said
        # Every answer 2xx (or wrk's 499s): nothing to say, warnings or not.
        calm = written("calm.log", answer("a1", 200), answer("b2", 499), cut)
        assert explain(calm, service_log) == []
        assert explain(os.path.join(scratch, "absent.log"), service_log) == []


def self_test():
    """The arithmetic a claim rests on, on made-up rounds: a figure's ratio
    is to the mean of the reference's slices around it, never to another
    minute's, and a reference's slices add up to one figure a round."""
    def line(round_, name, kind, rps_, target=None, **extra):
        wrk = {"requests": int(rps_ * 5), "seconds": 5, "rps": rps_, "p50_ms": 1.0, "p99_ms": rps_ / 1000,
               "non_2xx": 0, "socket_errors": 0}
        return {"round": round_, "name": name, "kind": kind, "url": "", "method": "GET", "peak_rss_kib": None,
                "pss_kib": None, "peak_pg_connections": None, "target": target, "wrk": wrk, **extra}
    figures = add_ratios(add_up_slices([
        line(1, PROXIED_CEILING, "ceiling", 30000.0, slice=True),
        line(1, "GET /v1/hello", "nginx", 24000.0, {"share": 0.8}, beside=[30000.0, 30000.0]),
        line(1, PROXIED_CEILING, "ceiling", 30000.0, slice=True),
        # held to nothing, but shown against the ceiling around it
        line(1, "GET /v1/hello, poem alone", "floor", 27000.0, beside=[30000.0, 30000.0]),
        line(1, PROXIED_CEILING, "ceiling", 30000.0, slice=True),
        # the machine slowed down: the figure after it is held to the slower
        # minute's ceiling, not to the round's
        line(1, "GET /getName", "nginx", 12000.0, {"share": 0.5}, beside=[30000.0, 18000.0]),
        line(1, PROXIED_CEILING, "ceiling", 18000.0, slice=True),
        line(1, "GET /v1/hello, direct", "direct", 26000.0),
        line(1, "a bound", "bound", 100.0, slice=True),
        line(1, "POST /work", "nginx", 90.0, {"share": 0.9, "of": "a bound"}, beside=[100.0, 80.0]),
        line(1, "a bound", "bound", 80.0, slice=True),
        line(1, "probe", "nginx", 700.0, slice=True),  # p99 0.7 ms
        line(1, "probe, flooded", "nginx", 1400.0, {"p99_at_most": 2, "of": "probe"}, beside_p99=[0.7, 2.1]),
        line(1, "probe", "nginx", 700.0, slice=True),
    ]))
    names = [f["name"] for f in figures]
    assert names == [PROXIED_CEILING, "GET /v1/hello", "GET /v1/hello, poem alone", "GET /getName", "GET /v1/hello, direct",
                     "a bound", "POST /work", "probe", "probe, flooded"], names
    ceiling = figures[0]["wrk"]
    assert (ceiling["rps"], ceiling["requests"], ceiling["seconds"], ceiling["p99_ms"]) == (27000.0, 540000, 20, 27.0), ceiling
    assert ceiling["slices"] == [30000.0, 30000.0, 30000.0, 18000.0]
    floor = next(f for f in figures if f["kind"] == "floor")
    assert floor["ratio_to_proxied_ceiling"] == 0.9, floor
    checks = {c["target"]: c for c in judge(figures)}
    assert checks["GET /v1/hello >= 80% of the proxied ceiling"]["rounds"] == ["80%"], checks
    assert checks["GET /getName >= 50% of the proxied ceiling"]["rounds"] == ["50%"], checks
    assert checks["POST /work >= 90% of a bound"]["rounds"] == ["100%"], checks
    # A value that misses never shows as its target: rounded away from it.
    near = judge(add_ratios(add_up_slices([
        line(3, PROXIED_CEILING, "ceiling", 10000.0),
        line(3, "GET /getName", "nginx", 4996.0, {"share": 0.5}),
        line(3, "GET /v1/hello", "nginx", 2900.0, {"share": 0.29}),
        line(3, "probe", "nginx", 1000.0),
        line(3, "probe, flooded", "nginx", 2004.0, {"p99_at_most": 2, "of": "probe"}),
        {**line(3, "idle", "idle", 0.0, {"max_rss_mib": 30}), "peak_rss_kib": 30.2 * 1024, "wrk": None},
    ])))
    near = {c["target"]: (c["value"], c["met"]) for c in near}
    assert near["GET /getName >= 50% of the proxied ceiling"] == ("49%", False), near
    assert near["GET /v1/hello >= 29% of the proxied ceiling"] == ("29%", True), near
    assert near["probe, flooded: p99 <= 2x that of probe"] == ("2.01x", False), near
    assert near["idle: RSS of the master and its processes <= 30 MiB"] == ("31 MiB", False), near
    # 1.4 ms against the mean of 0.7 and 2.1 ms beside it, not the slices' 0.7
    assert checks["probe, flooded: p99 <= 2x that of probe"]["rounds"] == ["1.00x"], checks
    # A figure without slices around it is held to its round's reference.
    plain = add_ratios(add_up_slices([line(2, PROXIED_CEILING, "ceiling", 20000.0),
                                      line(2, "GET /v1/hello", "nginx", 15000.0, {"share": 0.8})]))
    assert plain[1]["ratio_to_proxied_ceiling"] == 0.75, plain
    assert not_held(figures) == [], not_held(figures)
    assert not_held(plain) == ["GET /v1/hello"], not_held(plain)
    explain_self_test()
    print("bench_report: self-test passed")


def main():
    if sys.argv[1:] == ["--self-test"]:
        self_test()
        return 0
    if sys.argv[1:2] == ["--explain"] and len(sys.argv) == 4:
        for line in explain(sys.argv[2], sys.argv[3]):
            print(line, file=sys.stderr)
        return 0
    if sys.argv[1:] == ["--render"]:
        with open("docs/benchmarks.json") as file:
            report = json.load(file)
        with open("docs/benchmarks.md", "w") as file:
            file.write(markdown(report))
        return 0
    if sys.argv[1:]:
        # --help, or a call this script does not take: its docstring says
        # which it does.
        print(__doc__, file=sys.stderr)
        return 0 if sys.argv[1:] in (["--help"], ["-h"]) else 2
    if "BENCH_RESULTS" not in os.environ:
        print("bench_report.py: scripts/bench.sh runs this with its results in BENCH_RESULTS; "
              "see --help for what runs by hand", file=sys.stderr)
        return 2
    smoke = os.environ["BENCH_SMOKE"] == "1"
    with open(os.environ["BENCH_RESULTS"]) as lines:
        figures = add_ratios(add_up_slices([json.loads(line) for line in lines if line.strip()]))
    unheld = not_held(figures)
    if unheld:
        print("bench: measured without their reference just around them: " + ", ".join(unheld), file=sys.stderr)
        return 1

    settings = {
        "workers": int(os.environ["WORKERS"]),
        "database_pool_size": int(os.environ["DATABASE_POOL_SIZE"]),
        "pool_total": int(os.environ["WORKERS"]) * int(os.environ["DATABASE_POOL_SIZE"]),
        "wrk_threads": int(os.environ["BENCH_THREADS"]),
        "wrk_connections": int(os.environ["BENCH_CONNECTIONS"]),
        "seconds_per_figure": int(os.environ["BENCH_DURATION"]),
        "rounds": int(os.environ["BENCH_ROUNDS"]),
        "lifted": {name: os.environ.get(name) for name in os.environ.get("BENCH_LIFTED", "").split()},
        "log_level": os.environ.get("RUST_LOG", "info"),
    }

    checks = judge(figures)
    peak_pg = max((f["peak_pg_connections"] or 0) for f in figures if f["kind"] != "pgbench")
    checks.append({"target": f"PostgreSQL connections <= pool total ({settings['pool_total']})",
                   "value": str(peak_pg), "rounds": [], "met": peak_pg <= settings["pool_total"]})

    report = {
        "when": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": os.environ.get("BENCH_COMMIT", "unknown"),
        "machine": machine(),
        "versions": versions(),
        "settings": settings,
        "notes": [line for line in os.environ.get("BENCH_NOTES", "").splitlines() if line],
        "figures": summarize(figures),
        "rounds": figures,
        "targets": checks,
    }
    out = os.environ["BENCH_OUT"]
    with open(os.path.join(out, "benchmarks.json"), "w") as file:
        json.dump(report, file, indent=2)
        file.write("\n")
    with open(os.path.join(out, "benchmarks.md"), "w") as file:
        file.write(markdown(report))

    if smoke:
        broken = sorted({f["name"] for f in figures if f.get("wrk") and (
            f["wrk"]["requests"] == 0 or f["wrk"]["non_2xx"] or f["wrk"]["socket_errors"])})
        if broken:
            print("bench: these figures failed: " + ", ".join(broken), file=sys.stderr)
            return 1
        print(f"bench: smoke run of {len(figures)} figures passed (no timing is judged)")
        return 0
    for check in checks:
        print(f"bench: {'met   ' if check['met'] else 'MISSED'} {check['target']}: {check['value']}"
              + (f" (rounds: {', '.join(check['rounds'])})" if check["rounds"] else ""))
    print(f"bench: wrote {out}/benchmarks.md and {out}/benchmarks.json")
    return 0


def spread(low_high, shown):
    return f"{shown(low_high[0])}–{shown(low_high[1])}" if low_high else "—"


def markdown(report):
    m, v, s = report["machine"], report["versions"], report["settings"]
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (scripts/bench.sh); the text under \"Reading",
        "the figures\" is kept by hand in docs/benchmarks-notes.md and copied in.",
        "",
        f"Commit {report.get('commit', 'unknown')}, run {report['when']} on {m['cpu']}, {m['cores']} cores, "
        f"{m['memory_gib']} GiB, Linux {m['kernel']}.",
        f"{v['rustc']}; nginx {v['nginx']}; {v['postgresql']}; {v['redis']}; {v['wrk']}.",
        "",
        f"Settings: {s['workers']} workers, DATABASE_POOL_SIZE={s['database_pool_size']} "
        f"(pool total {s['pool_total']}), RUST_LOG={s['log_level']}; wrk with {s['wrk_threads']} threads, "
        f"{s['wrk_connections']} connections, {s['seconds_per_figure']} s a figure after a warm-up, "
        f"{s.get('rounds', 1)} rounds, all on this one machine over loopback. Each figure is the median of its "
        "rounds, with the lowest and highest beside it; a ratio is taken within a round, against the reference "
        "measured just before and after the figure where it has one (below). Memory is the master's "
        "and every process below it together (the workers, and any process of theirs): RSS counts the pages they share (the binary's code above all) once in each, "
        "PSS shares them out.",
    ]
    if s["lifted"]:
        lifted = ", ".join(f"{name}={value}" for name, value in s["lifted"].items())
        lines.append(f"Rate limits lifted for the run: {lifted}.")
    lines += report["notes"]
    lines += [
        "",
        "| figure | through | requests/s | spread | p50 ms | p99 ms | errors | peak RSS MiB | peak PG conns | vs proxied ceiling |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    through_of = {"ceiling": "nginx only", "nginx": "nginx", "floor": "nginx, to poem alone", "direct": "service's port",
                  "pgbench": "PostgreSQL only", "bound": "the service's binary alone", "idle": "—"}
    for f in report["figures"]:
        number = lambda x, fmt="{:.0f}": fmt.format(x) if x is not None else "—"
        # Rounded as the targets are (judge), so that a row and its target agree.
        mib, share = shown_up("{:.0f}", 0), shown_down("{:.0%}", 2)
        rss = mib(f["peak_rss_kib"] / 1024) if f["peak_rss_kib"] is not None else "—"
        if f.get("pss_kib") is not None:
            rss += f" (PSS {mib(f['pss_kib'] / 1024)})"
        pg = number(f["peak_pg_connections"])
        ratio = (f"{share(f['ratio_to_proxied_ceiling'])} ({spread(f['ratio_spread'], share)})"
                 if f.get("ratio_to_proxied_ceiling") is not None and f["kind"] in ("nginx", "direct", "floor")
                 else "—")
        if f["name"] == PROXIED_CEILING:
            ratio = "100%"
        lines.append(
            f"| {f['name']} | {through_of[f['kind']]} | {number(f.get('rps'))} | "
            f"{spread(f.get('rps_spread'), '{:.0f}'.format)} | {number(f.get('p50_ms'), '{:.2f}')} | "
            f"{number(f.get('p99_ms'), '{:.2f}')} | {number(f.get('errors'))} | {rss} | {pg} | {ratio} |")
    lines += ["", "| target | median | rounds | |", "|---|---:|---|---|"]
    for check in report["targets"]:
        lines.append(f"| {check['target']} | {check['value']} | {', '.join(check.get('rounds', []))} | "
                     f"{'met' if check['met'] else '**missed**'} |")
    lines.append("")
    notes = "docs/benchmarks-notes.md"
    if os.path.exists(notes):
        with open(notes) as file:
            lines += [file.read().rstrip(), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
