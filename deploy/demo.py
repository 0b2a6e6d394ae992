"""`make demo`: five real agents on loopback find each other and place tasks; nodes die.

1. start 5 agents (separate processes) and print the membership table until all see 5 alive;
2. submit 8 short tasks through different agents and a long one; show where each ran;
3. SIGKILL the agent running the long task: every survivor marks it failed, and the task is
   placed again elsewhere and completes (attempt 2);
4. SIGTERM another agent: it leaves gracefully and the others show it as "left" (not failed);
5. print the timings and stop everything.

Protocol timings are shortened (probe every 0.2 s) so the whole run takes well under a minute.
"""

from __future__ import annotations

import argparse
import sys
import time

from deploy.cli import format_members
from deploy.client import ClientError, query
from deploy.local_cluster import LocalCluster, Views
from gossip.config import FAST_SWIM

TERMINAL = ("succeeded", "failed", "cancelled", "rejected")


def _wait_task(addr: str, task_id: str, states: tuple[str, ...], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = query(addr, "status", 3.0, {"id": task_id})
        if row["state"] in states:
            return row
        time.sleep(0.1)
    raise TimeoutError(f"task {task_id} not {'/'.join(states)} within {timeout:g} s")


def _summary(views: Views) -> str:
    """One line per observer: what it thinks of every member."""
    lines = []
    for observer, view in sorted(views.items()):
        if view is None:
            lines.append(f"  {observer}: (no answer)")
        else:
            seen = "  ".join(f"{n}={s}" for n, s in sorted(view.items()))
            lines.append(f"  {observer} sees: {seen}")
    return "\n".join(lines)


class _Printer:
    """Print the views once a second (and whenever they change) while waiting."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.last_print = 0.0
        self.last_views: Views | None = None

    def __call__(self, views: Views) -> None:
        now = time.monotonic()
        if views != self.last_views or now - self.last_print >= 1.0:
            print(f"[t+{now - self.t0:5.2f}s]\n{_summary(views)}", flush=True)
            self.last_print, self.last_views = now, views


def run(n: int = 5, timeout: float = 20.0) -> int:
    timings: list[tuple[str, float]] = []
    with LocalCluster(n, swim=FAST_SWIM, log_level="WARNING", load_interval=0.5,
                      resources={"cpus": 2, "memory": "2GiB"},
                      placement={"heartbeat": 0.5, "report_retry": 0.3}) as c:  # fmt: skip
        try:
            print(f"== starting {n} agents on loopback (logs in {c.workdir})", flush=True)
            t0 = time.monotonic()
            c.start()
            timings.append(("all agents answering", time.monotonic() - t0))
            c.wait_converged(timeout, on_poll=_Printer(t0))
            timings.append(("converged: every agent sees all alive", time.monotonic() - t0))
            print("\n== membership as node0 sees it\n" + format_members(c.members(0)) + "\n")

            print("== submitting 8 short tasks through different agents, and one long one")
            ts = time.monotonic()
            for i in range(8):
                entry = c.nodes[i % n].addr
                query(entry, "submit", 5.0, {"id": f"demo-{i}", "spec": {
                    "argv": ["echo", f"task {i}"], "cpus": 1}})
            query(c.nodes[0].addr, "submit", 5.0, {"id": "demo-long", "spec": {
                "argv": ["sh", "-c", "sleep 4; echo long task done"], "cpus": 1}})  # fmt: skip
            for i in range(8):
                row = _wait_task(c.nodes[(i + 1) % n].addr, f"demo-{i}", TERMINAL, timeout)
                print(f"  demo-{i}: {row['state']} on {row['node']} "
                      f"(placed {1000 * (row['placed'] - row['submitted']):.1f} ms after submit)")
            timings.append(("8 short tasks submitted and finished", time.monotonic() - ts))
            row = _wait_task(c.nodes[0].addr, "demo-long", ("running",), timeout)
            runner = row["node"]
            victim = next(node for node in c.nodes if node.node_id == runner)
            print(f"  demo-long: running on {runner} (attempt {row['attempt']})\n")

            print(f"== SIGKILL {victim.node_id} ({victim.addr}), which runs demo-long", flush=True)
            t1 = time.monotonic()
            c.kill(victim.index)
            took = c.wait_status(victim.node_id, "failed", timeout, on_poll=_Printer(t1))
            timings.append((f"{victim.node_id} marked failed by all survivors", took))
            survivor = next(node for node in c.nodes if node.running)
            row = _wait_task(survivor.addr, "demo-long", TERMINAL, timeout + 10)
            timings.append(("demo-long finished elsewhere after the kill", time.monotonic() - t1))
            print(f"  demo-long: {row['state']} on {row['node']}, attempt {row['attempt']}, "
                  f"output {row['stdout'].strip()!r}")
            print(f"\n== membership as {survivor.node_id} sees it\n"
                  f"{format_members(c.members(survivor.index))}\n")

            leaver = next(node for node in reversed(c.nodes) if node.running)
            print(f"== SIGTERM {leaver.node_id} ({leaver.addr}): graceful leave", flush=True)
            t2 = time.monotonic()
            code = c.terminate(leaver.index)
            timings.append((f"{leaver.node_id} exited (code {code}) after leaving",
                            time.monotonic() - t2))  # fmt: skip
            took = c.wait_status(leaver.node_id, "left", timeout, on_poll=_Printer(t2))
            timings.append((f"{leaver.node_id} seen as left by all others", took))
            print(f"\n== membership as {survivor.node_id} sees it\n"
                  f"{format_members(c.members(survivor.index))}\n")
        except (TimeoutError, RuntimeError, ClientError) as e:
            print(f"demo: error: {e}", file=sys.stderr)
            for node in c.nodes:
                print(f"--- {node.node_id} log (last lines)\n{c.log_tail(node)}", file=sys.stderr)
            return 1
        finally:
            c.stop()
    print("== timings")
    for what, secs in timings:
        print(f"  {secs:6.2f} s  {what}")
    print(f"  (SWIM settings: {', '.join(f'{k}={v}' for k, v in FAST_SWIM.items())})")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deploy.demo", description=__doc__.split("\n")[0])
    p.add_argument("-n", type=int, default=5, help="number of agents (default 5, at least 3)")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds allowed for each step")
    args = p.parse_args(argv)
    if args.n < 3:
        p.error("-n must be at least 3")
    try:
        return run(args.n, args.timeout)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
