#!/usr/bin/env python3
"""Writes a realistic stack file with N services, for benchmarks.

The services stand in layers: each depends on about two services of earlier layers, so the
dependency graph is a DAG of ~N/20 waves. Strategies are mixed: blue-green for the services
behind a traffic route (they have a `port` and publish no host `ports`), manual for a few
long-running workers, recreate for the rest. Every service has an env map of ~10 keys, some
with `${VAR}`s and one with a secret; most have a health check. There are 10 data sets
(PostgreSQL, SQLite, volumes) with writers, 20 checks and custom steps in several phases.

The structure depends only on N (a fixed seed), never on --version: two versions of the same
N differ in the image tags of most services and in some env values, like a real upgrade.

    gen_stack.py --services 200 --out /tmp/v1/cutover.yaml --version 1.0.0

Python 3 standard library only.
"""

import argparse
import json
import os
import random
import sys

LAYER_SIZE = 20
DATA_SETS = 10
CHECKS = 20
SEED = 20240611


def q(value):
    """A double-quoted YAML scalar (JSON strings are valid YAML)."""
    return json.dumps(value)


def flow_list(items):
    return "[" + ", ".join(q(i) for i in items) + "]"


def plan_services(n, rng):
    """Decides the shape of every service; independent of the version."""
    names = [f"svc-{i:03d}" for i in range(n)]
    services = []
    for i, name in enumerate(names):
        layer = i // LAYER_SIZE
        earlier = names[: layer * LAYER_SIZE]
        deps = sorted(rng.sample(earlier, min(len(earlier), rng.choice([1, 2, 2, 3]))))
        roll = rng.random()
        if layer > 0 and roll < 0.30:
            strategy = "blue-green"
        elif roll < 0.36:
            strategy = "manual"
        else:
            strategy = "recreate"
        routed = strategy == "blue-green"
        has_port = routed or rng.random() < 0.5
        services.append(
            {
                "name": name,
                "layer": layer,
                "deps": deps,
                "strategy": strategy,
                "routed": routed,
                "port": 8000 + (i % 7) * 10 if has_port else None,
                # Host ports only on some recreate services, each its own.
                "host_port": 20000 + i if not routed and rng.random() < 0.25 else None,
                # Most images follow the release; some are pinned and stay put.
                "follows_release": rng.random() < 0.8,
                "health": rng.choice(["http", "http", "tcp", "command", None])
                if has_port
                else rng.choice(["tcp", "command", "command", None]),
                "volume": rng.random() < 0.15,
                "stop_grace": rng.choice([None, None, "30s", "2m"]),
            }
        )
    return services


def env_map(svc, i, version):
    env = {
        "APP_NAME": svc["name"],
        "LOG_LEVEL": "${log_level}",
        "DB_HOST": "db.internal.example.org",
        "DB_PORT": "5432",
        "DB_USER": f"user_{i:03d}",
        "DB_PASSWORD": "${DB_PASSWORD}",
        "PUBLIC_URL": "https://${domain}/" + svc["name"],
        "CACHE_URL": "redis://cache.internal:6379/" + str(i % 16),
        "WORKERS": str(2 + i % 6),
        "FEATURE_FLAGS": "search,export" if i % 2 else "search",
    }
    # Some values change with the release, like a real upgrade's config changes.
    if i % 5 == 0:
        env["RELEASE_NOTES_URL"] = f"https://example.org/releases/{version}"
    if i % 7 == 0:
        env["WORKERS"] = str(2 + (i + sum(map(ord, version))) % 6)
    return env


def render_service(svc, i, version):
    name = svc["name"]
    lines = [f"  {name}:"]
    if svc["follows_release"]:
        lines.append(f"    image: ${{registry}}/{name}:${{version}}")
    else:
        lines.append(f"    image: ${{registry}}/{name}:pinned-{i % 3}")
    if i % 4 == 0:
        lines.append(f"    command: {flow_list(['/app/bin/' + name, '--config', '/etc/app/config.yaml'])}")
    lines.append("    env:")
    for k, v in env_map(svc, i, version).items():
        lines.append(f"      {k}: {q(v)}")
    if svc["host_port"] is not None:
        lines.append(f"    ports: {flow_list([str(svc['host_port']) + ':' + str(svc['port'] or 9000)])}")
    if svc["port"] is not None:
        lines.append(f"    port: {svc['port']}")
    if svc["volume"]:
        lines.append(f"    volumes: {flow_list([name + '-data:/var/lib/' + name, './conf/' + name + ':/etc/app:ro'])}")
    if svc["deps"]:
        lines.append(f"    depends_on: {flow_list(svc['deps'])}")
    if svc["strategy"] != "recreate" or i % 3 == 0:
        lines.append(f"    strategy: {svc['strategy']}")
    health = svc["health"]
    if health == "http":
        lines.append("    health: { http: /healthz, expect_status: 200, interval: 5s, deadline: 2m }")
    elif health == "tcp":
        lines.append(f"    health: {{ tcp: {svc['port'] or 9000}, deadline: 1m }}")
    elif health == "command":
        lines.append("    health:")
        lines.append(f"      command: {flow_list(['/app/bin/healthcheck', '--quiet'])}")
        lines.append("      start_period: 10s")
        lines.append("      deadline: 90s")
    if svc["stop_grace"]:
        lines.append(f"    stop_grace: {svc['stop_grace']}")
    if i % 10 == 0:
        lines.append("    restart: on-failure")
    return lines


def render_data(services, rng):
    kinds = ["postgres"] * 4 + ["sqlite"] * 3 + ["volume"] * 3
    lines = ["data:"]
    names = [s["name"] for s in services]
    data_names = []
    for d, kind in enumerate(kinds[:DATA_SETS]):
        writers = sorted(rng.sample(names, min(len(names), rng.choice([1, 2, 3, 4]))))
        if kind == "postgres":
            name = f"pg_{d}"
            lines += [
                f"  {name}:",
                f"    postgres: {{ url: \"${{DB_ADMIN_URL}}\", database: app_{d} }}",
                f"    writers: {flow_list(writers)}",
            ]
            if d % 2 == 0:
                lines += [
                    "    schema_version:",
                    f"      query: {q('select version from schema_migrations order by version desc limit 1')}",
                    "      expect: \"${version}\"",
                ]
        elif kind == "sqlite":
            name = f"lite_{d}"
            lines += [
                f"  {name}:",
                f"    sqlite: {{ path: ./data/{name}.db }}",
                f"    writers: {flow_list(writers)}",
            ]
        else:
            name = f"vol_{d}"
            lines += [
                f"  {name}:",
                f"    volume: {{ name: {name} }}",
                f"    writers: {flow_list(writers)}",
            ]
        data_names.append((name, kind))
    return lines, data_names


def render_checks(services, data_names):
    lines = ["checks:"]
    routed = [s for s in services if s["port"] is not None]
    pgs = [n for n, k in data_names if k == "postgres"]
    for c in range(CHECKS):
        svc = services[(c * 7) % len(services)]
        kind = c % 7
        name = f"check_{c:02d}"
        lines.append(f"  {name}:")
        if kind == 0 and routed:
            target = routed[c % len(routed)]["name"]
            lines.append(f"    http: {{ service: {target}, path: /api/version, body_contains: \"${{version}}\" }}")
        elif kind == 1:
            lines.append(f"    tcp: {svc['name']}:{svc['port'] or 9000}")
        elif kind == 2 and pgs:
            lines.append(f"    sql: {{ data: {pgs[c % len(pgs)]}, query: {q('select count(*) from users')}, expect: \"1\" }}")
        elif kind == 3:
            lines.append(f"    exec: {{ service: {svc['name']}, command: [/app/bin/selftest], output_contains: ok }}")
        elif kind == 4:
            lines.append(f"    logs: {{ service: {svc['name']}, absent: FATAL }}")
        elif kind == 5:
            lines.append(f"    container_health: {svc['name']}")
        else:
            lines.append(f"    command: {flow_list(['curl', '-fsS', 'https://status.example.org/api'])}")
        if c % 3 == 0:
            lines.append("    timeout: 2m")
            lines.append("    interval: 10s")
            lines.append("    retries: 3")
    return lines


def render_steps(services, data_names):
    first = services[0]["name"]
    pg = next((n for n, k in data_names if k == "postgres"), None)
    lines = [
        "steps:",
        "  plan:",
        "    - manual: \"Read the release notes for ${version}\"",
        "    - approval: \"The change owner approves the window\"",
        "  preflight:",
        "    - run: [./scripts/backup-config.sh, \"${version}\"]",
        "      name: back up the configuration",
        "      rerun_safe: true",
        "    - check: check_01",
        "  quiesce:",
        f"    - exec: {{ service: {first}, command: [/app/bin/drain, --timeout, 60s] }}",
        "      name: drain the job queue",
        "      timeout: 5m",
        "  upgrade:",
    ]
    if pg:
        lines += [
            f"    - sql: {{ data: {pg}, query: {q('analyze')} }}",
            "      name: refresh planner statistics",
        ]
    lines += [
        "  verify:",
        "    - wait: check_00",
        "    - check: check_05",
        "    - http: { url: \"https://${domain}/healthz\", status: 200 }",
        "      name: the public endpoint answers",
        "  release:",
        "    - run: [./scripts/notify.sh, \"deployed ${version}\"]",
        "      name: tell the team",
    ]
    return lines


def render_traffic(services):
    lines = ["traffic:", "  listen: 0.0.0.0:8443", "  max_hold: 15s", "  routes:"]
    routed = [s for s in services if s["routed"]]
    for s in routed:
        host = q(s["name"] + ".${domain}")
        lines.append(f"    - {{ host: {host}, service: {s['name']} }}")
    if not routed:
        lines[-1] = "  routes: []"
    return lines


def generate(n, version):
    rng = random.Random(SEED + n)
    services = plan_services(n, rng)
    out = [
        f"# Generated by bench/gen_stack.py --services {n} --version {version}; do not edit.",
        "name: bench",
        "",
        "vars:",
        f"  version: {q(version)}",
        "  registry: registry.example.org/bench",
        "  log_level: info",
        "  domain: bench.example.org",
        "",
        "secrets:",
        "  DB_PASSWORD: { env: BENCH_DB_PASSWORD }",
        "  DB_ADMIN_URL: { env: BENCH_DB_ADMIN_URL }",
        "",
        "services:",
    ]
    for i, svc in enumerate(services):
        out += render_service(svc, i, version)
    data_lines, data_names = render_data(services, rng)
    out += [""] + data_lines
    out += [""] + render_checks(services, data_names)
    out += [""] + render_steps(services, data_names)
    out += [""] + render_traffic(services)
    return "\n".join(out) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, required=True, help="how many services (>= 1)")
    parser.add_argument("--out", required=True, help="where to write the stack file")
    parser.add_argument("--version", default="1.0.0", help="the release the images are tagged with")
    args = parser.parse_args(argv)
    if args.services < 1:
        parser.error("--services must be at least 1")
    text = generate(args.services, args.version)
    parent = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(parent, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text)
    # The host scripts its custom steps run: `validate` checks that a `./script` a step names
    # exists beside the stack file and may be run.
    scripts = os.path.join(parent, "scripts")
    os.makedirs(scripts, exist_ok=True)
    for name in ("backup-config.sh", "notify.sh"):
        path = os.path.join(scripts, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write("#!/bin/sh\necho \"$0 $*\"\n")
        os.chmod(path, 0o755)
    return 0


if __name__ == "__main__":
    sys.exit(main())
