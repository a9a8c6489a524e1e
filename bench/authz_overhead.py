"""Figure: what the authorization checks of issue 11 add to a request's CPU on the hot path, before vs after.

Two ``atrium serve`` processes side by side, one per source tree (``--before-src``, ``--after-src``: each put
first on ``PYTHONPATH`` for the same virtualenv, checked with ``import atrium``; one ``PYTHONHASHSEED`` for
both), each on its own SQLite data dir with the bootstrap admin key, the built-in ``fake`` chat model (in
process: no upstream), the hash embedder, the response cache off, and rate limits on but set far above what
the bench sends. In each, the same principals: the admin key (bootstrap), a member user
(``POST /api/v1/admin/users``) with an access token (``POST /api/v1/auth/token``, fetched again before every
round) and a member key of that user (``POST /api/v1/admin/keys``); one small document is ingested by the
admin into a collection.

Measured, sequential non-stream requests on one keep-alive connection per server:

``completions``  ``POST /v1/chat/completions`` with the member key
``ask``          ``POST /api/v1/chat/ask`` with the member's access token (a new conversation each time; the
                 retrieval reads the ingested document)

A round sends ``--requests`` completions, then ``--ask-requests`` asks, to both servers alternately, one
request to each in turn (which goes first alternates from round to round), between two reads of both servers'
CPU time (user+sys of each process tree, from /proc, as bench/loadgen.py does): the two sides' windows span the
same wall time, so whatever else runs on the machine weighs on both alike. Both servers are pinned to one CPU
and the client to the others (``--no-pin``: not). A session is a fresh pair of servers; ``--sessions``
(default 2) start them in swapped order, because on this VM the server started second measured about 2%
cheaper than its twin (an A/A run: both options on one tree; per-session medians 0.983-0.986 vs 1.016-1.019).

The table gives CPU ms per request of each side (median and range over all rounds) and after/before: over all
rounds (total CPU), the median and range of the per-round ratios, and the per-round median of each session
(a start-order effect shows as sessions on either side of 1). The issue 11 target: after/before within 1.05.

    .venv/bin/python bench/authz_overhead.py --before-src /tmp/authz/before/src --after-src src \
        [--requests 1000] [--ask-requests 100] [--rounds 8] [--sessions 2] [--warmup 50]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import BENCH_KEY, atrium_env, start_serve, stop, wait_ready  # noqa: E402
from _gateway import HIGH_LIMIT, machine_note, markdown  # noqa: E402
from loadgen import tree_cpu_seconds  # noqa: E402

SIDES = ("before", "after")
ENDPOINTS = ("completions", "ask")
MEMBER_EMAIL, MEMBER_PASSWORD = "member@bench.example", "bench-member-password-0123"
COLLECTION = "handbook"
DOCUMENT = """\
# Travel and expenses handbook

Expense approval limit: a manager approves expenses up to 2,000 EUR; above that the finance director
approves. Receipts are uploaded within 30 days of the expense.

Travel: book trains for trips under four hours; flights need the manager's approval in advance. Hotels are
reimbursed up to 180 EUR per night in capitals and 120 EUR elsewhere.

Per diem: 45 EUR per full day abroad, 30 EUR in the home country.
"""
COMPLETION = {"model": "fake", "max_tokens": 16,
              "messages": [{"role": "user", "content": "Say hello in a few words."}]}
ASK = {"message": "What is the expense approval limit for a manager?"}


@dataclass
class Side:
    name: str
    src: Path
    process: subprocess.Popen[bytes]
    url: str
    log: Path
    atrium_file: str = ""
    member_key: str = ""
    member_user_id: str = ""
    token: str = ""
    sources: int = -1  # sources in the first answer to ``ask`` (both sides must retrieve alike)
    idle_ms_per_s: float = 0.0
    cpu: dict[str, list[float]] = field(default_factory=lambda: {e: [] for e in ENDPOINTS})

    @property
    def pid(self) -> int:
        return self.process.pid


def tree_label(src: Path) -> str:
    """The commit of the tree holding ``src`` and how many files under ``src`` differ from it."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(src), *args], capture_output=True, text=True, timeout=30)
        return done.stdout.strip() if done.returncode == 0 else "?"

    changed = [line for line in git("status", "--porcelain", "--", ".").splitlines() if line.strip()]
    return f"{git('rev-parse', '--short', 'HEAD')}" + (f" + {len(changed)} changed files" if changed else "")


def server_env(data_dir: Path, src: Path) -> dict[str, str]:
    return atrium_env(
        data_dir, PYTHONPATH=str(src), PYTHONHASHSEED="0", ATRIUM_CHAT__PROVIDER="fake",
        ATRIUM_EMBEDDING__PROVIDER="hash", ATRIUM_KNOWLEDGE__DEMO_COLLECTION="false",
        ATRIUM_GATEWAY__CACHE__ENABLED="false",
        ATRIUM_RATE_LIMITS__ENABLED="true", ATRIUM_RATE_LIMITS__KEY_REQUESTS_PER_MINUTE=HIGH_LIMIT,
        ATRIUM_RATE_LIMITS__USER_REQUESTS_PER_MINUTE=HIGH_LIMIT,
        ATRIUM_RATE_LIMITS__ORG_REQUESTS_PER_MINUTE=HIGH_LIMIT)


def start_side(name: str, src: Path, tmp: Path) -> Side:
    env = server_env(tmp / f"{name}-data", src)
    where = subprocess.run([sys.executable, "-c", "import atrium; print(atrium.__file__)"], env=env,
                           capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    if not Path(where).resolve().is_relative_to(src):
        raise SystemExit(f"{name}: PYTHONPATH={src} imports atrium from {where}")
    log = tmp / f"{name}.log"
    process, url = start_serve(env, log)
    side = Side(name, src, process, url, log, atrium_file=where)
    try:
        wait_ready(process, url, timeout=180)
    except (RuntimeError, TimeoutError):
        stop(process)
        raise SystemExit(f"{name} did not start; its log ends:\n{log.read_text()[-3000:]}") from None
    return side


def expect(reply: httpx.Response, what: str) -> dict[str, Any]:
    if reply.status_code not in (200, 201, 202):
        raise SystemExit(f"{what}: {reply.status_code} {reply.text[:500]}")
    body: dict[str, Any] = reply.json()
    return body


def login(side: Side, client: httpx.Client) -> None:
    body = expect(client.post("/api/v1/auth/token", json={"email": MEMBER_EMAIL, "password": MEMBER_PASSWORD}),
                  f"{side.name}: login")
    side.token = body["access_token"]


def set_up(side: Side, client: httpx.Client) -> None:
    """The member user, its key and access token, and one ingested document; all through the API."""
    admin = {"Authorization": f"Bearer {BENCH_KEY}"}
    user = expect(client.post("/api/v1/admin/users", headers=admin, json={
        "email": MEMBER_EMAIL, "name": "Bench member", "role": "member", "password": MEMBER_PASSWORD}),
        f"{side.name}: create the member user")
    side.member_user_id = user["id"]
    key = expect(client.post("/api/v1/admin/keys", headers=admin, json={
        "name": "bench-member", "role": "member", "user_id": side.member_user_id}),
        f"{side.name}: create the member key")
    side.member_key = key["key"]
    login(side, client)
    job = expect(client.post("/api/v1/documents", headers=admin, data={"collection": COLLECTION},
                             files=[("files", ("handbook.md", DOCUMENT.encode(), "text/markdown"))]),
                 f"{side.name}: upload")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = expect(client.get(f"/api/v1/jobs/{job['job_id']}", headers=admin), f"{side.name}: job")
        if state["status"] == "succeeded":
            return
        if state["status"] == "failed":
            raise SystemExit(f"{side.name}: ingestion failed: {state['error']}")
        time.sleep(0.1)
    raise SystemExit(f"{side.name}: ingestion not done after 120 s")


def call(side: Side, client: httpx.Client, endpoint: str) -> dict[str, Any]:
    if endpoint == "completions":
        reply = client.post("/v1/chat/completions", json=COMPLETION,
                            headers={"Authorization": f"Bearer {side.member_key}"})
        ok = reply.status_code == 200 and "choices" in reply.json()
    else:
        reply = client.post("/api/v1/chat/ask", json=ASK, headers={"Authorization": f"Bearer {side.token}"})
        ok = reply.status_code == 200 and "answer" in reply.json()
    if not ok:
        raise SystemExit(f"{side.name} {endpoint}: {reply.status_code} {reply.text[:500]}")
    body: dict[str, Any] = reply.json()
    return body


def window(order: list[Side], clients: dict[str, httpx.Client], endpoint: str, count: int) -> None:
    """``count`` calls to each side, alternating one by one, between two reads of both servers' CPU time:
    both windows span the same wall time, so whatever else runs on the machine weighs on both alike."""
    cpu0 = [tree_cpu_seconds(side.pid) for side in order]
    for _ in range(count):
        for side in order:
            call(side, clients[side.name], endpoint)
    for side, start in zip(order, cpu0, strict=True):
        side.cpu[endpoint].append(1000 * (tree_cpu_seconds(side.pid) - start) / count)


@contextlib.contextmanager
def servers(trees: dict[str, Path], order: tuple[str, ...], tmp: Path, pin: bool) -> Iterator[dict[str, Side]]:
    """Both servers, started in ``order``; with ``pin``, both on the last CPU (they inherit it from this
    process while it starts them) and this process on the others, so that neither is nearer the client."""
    sides: dict[str, Side] = {}
    cpus = sorted(os.sched_getaffinity(0))
    pin = pin and len(cpus) > 1
    try:
        if pin:
            os.sched_setaffinity(0, cpus[-1:])
        for name in order:
            sides[name] = start_side(name, trees[name], tmp)
        if pin:
            os.sched_setaffinity(0, cpus[:-1])
        yield sides
    finally:
        os.sched_setaffinity(0, cpus)
        for side in sides.values():
            stop(side.process)


def measure(sides: list[Side], counts: dict[str, int], rounds: int, warmup: int, idle_s: float) -> None:
    """Set both up (in the order given), warm them up, read their idle CPU, then the rounds."""
    clients = {side.name: httpx.Client(base_url=side.url, timeout=60) for side in sides}
    try:
        for side in sides:
            set_up(side, clients[side.name])
        for side in sides:
            side.sources = len(call(side, clients[side.name], "ask").get("sources") or [])
            for endpoint in ENDPOINTS:
                for _ in range(warmup):
                    call(side, clients[side.name], endpoint)
        idle0 = [tree_cpu_seconds(side.pid) for side in sides]
        time.sleep(idle_s)
        for side, start in zip(sides, idle0, strict=True):
            side.idle_ms_per_s = 1000 * (tree_cpu_seconds(side.pid) - start) / idle_s
        for number in range(rounds):
            order = sides if number % 2 == 0 else sides[::-1]
            for side in order:
                login(side, clients[side.name])  # outside the windows; a token lasts 15 min by default
            for endpoint in ENDPOINTS:
                window(order, clients, endpoint, counts[endpoint])
    finally:
        for client in clients.values():
            client.close()


def ratios(before: list[float], after: list[float]) -> list[float]:
    return [a / b if b else float("nan") for b, a in zip(before, after, strict=True)]


def report(sessions: list[dict[str, Side]], args: argparse.Namespace, elapsed: float) -> None:
    for number, sides in enumerate(sessions, 1):
        for side in sides.values():
            print(f"session {number}, {side.name}: {side.src} at {tree_label(side.src)} (atrium from "
                  f"{side.atrium_file}); idle CPU {side.idle_ms_per_s:.1f} ms/s; sources in an answer: "
                  f"{side.sources}")
        if sides["before"].sources != sides["after"].sources:
            print("WARNING: the two sides did not retrieve the same number of sources")
    rows = []
    for endpoint in ENDPOINTS:
        b = [v for sides in sessions for v in sides["before"].cpu[endpoint]]
        a = [v for sides in sessions for v in sides["after"].cpu[endpoint]]
        paired = ratios(b, a)
        per_session = [statistics.median(ratios(sides["before"].cpu[endpoint], sides["after"].cpu[endpoint]))
                       for sides in sessions]
        principal = "member key" if endpoint == "completions" else "member access token"
        path = "/v1/chat/completions" if endpoint == "completions" else "/api/v1/chat/ask"
        rows.append([f"`{path}`", principal, f"{statistics.median(b):.3f} ({min(b):.3f}-{max(b):.3f})",
                     f"{statistics.median(a):.3f} ({min(a):.3f}-{max(a):.3f})", f"{sum(a) / sum(b):.3f}",
                     f"{statistics.median(paired):.3f} ({min(paired):.3f}-{max(paired):.3f})",
                     ", ".join(f"{r:.3f}" for r in per_session)])
    pinning = "not pinned" if args.no_pin else "both servers pinned to one CPU, the client to the others"
    print(f"\nServer CPU ms per request ({pinning}); {args.sessions} sessions (fresh servers, the start order "
          f"swapped each time) x {args.rounds} rounds; a round: {args.requests} completions, then "
          f"{args.ask_requests} asks, to each side in turn (sequential, non-stream; {args.warmup} warm-up "
          f"each first); {machine_note()}; the run took {elapsed:.0f} s\n")
    print(markdown(["endpoint", "principal", "before ms/request: median (range)", "after ms/request: median (range)",
                    "after/before, all rounds", "after/before per round: median (range)",
                    "per-round median by session"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before-src", type=Path, required=True, help="the src/ folder of the 'before' tree")
    parser.add_argument("--after-src", type=Path, required=True, help="the src/ folder of the 'after' tree")
    parser.add_argument("--requests", type=int, default=1000, help="completions per side and round")
    parser.add_argument("--ask-requests", type=int, default=100, help="asks per side and round")
    parser.add_argument("--rounds", type=int, default=8, help="rounds per session")
    parser.add_argument("--sessions", type=int, default=2,
                        help="pairs of fresh servers, one after the other, the start order swapped each time")
    parser.add_argument("--warmup", type=int, default=50, help="unmeasured requests per endpoint and side")
    parser.add_argument("--no-pin", action="store_true",
                        help="leave CPU placement to the scheduler (default: both servers on the last CPU, "
                             "the client on the others)")
    parser.add_argument("--idle-s", type=float, default=3.0, help="how long the servers' idle CPU is read")
    args = parser.parse_args()
    trees = {}
    for name in SIDES:
        src = getattr(args, f"{name}_src").resolve()
        if not (src / "atrium" / "__init__.py").is_file():
            raise SystemExit(f"--{name}-src {src}: no atrium package there")
        trees[name] = src
    if not (1 <= args.requests <= 100_000 and 1 <= args.ask_requests <= 100_000 and 1 <= args.rounds <= 1000
            and 1 <= args.sessions <= 20 and 0 <= args.warmup <= 100_000 and 0 < args.idle_s <= 60):
        raise SystemExit("--requests, --ask-requests, --rounds, --sessions, --warmup or --idle-s out of range")
    started = time.monotonic()
    counts = {"completions": args.requests, "ask": args.ask_requests}
    sessions: list[dict[str, Side]] = []
    for number in range(args.sessions):
        order = SIDES if number % 2 == 0 else SIDES[::-1]
        with tempfile.TemporaryDirectory(prefix="atrium-authz-") as folder, \
                servers(trees, order, Path(folder), not args.no_pin) as sides:
            measure([sides[name] for name in order], counts, args.rounds, args.warmup, args.idle_s)
            sessions.append(sides)
    report(sessions, args, time.monotonic() - started)


if __name__ == "__main__":
    main()
