"""`make demo`: five real agents on loopback converge; one is killed, another leaves.

1. start 5 agents (separate processes) and print the membership table until all see 5 alive;
2. SIGKILL one: print the survivors' views until every survivor marks it failed;
3. SIGTERM another: it leaves gracefully and the others show it as "left" (not failed);
4. print the timings and stop everything.

Protocol timings are shortened (probe every 0.2 s) so the whole run takes well under 30 s.
"""

from __future__ import annotations

import argparse
import sys
import time

from deploy.cli import format_members
from deploy.local_cluster import FAST_SWIM, LocalCluster, Views


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
    with LocalCluster(n, swim=FAST_SWIM, log_level="WARNING", load_interval=0.5) as c:
        try:
            print(f"== starting {n} agents on loopback (logs in {c.workdir})", flush=True)
            t0 = time.monotonic()
            c.start()
            timings.append(("all agents answering", time.monotonic() - t0))
            c.wait_converged(timeout, on_poll=_Printer(t0))
            timings.append(("converged: every agent sees all alive", time.monotonic() - t0))
            print("\n== membership as node0 sees it\n" + format_members(c.members(0)) + "\n")

            victim = c.nodes[n - 1]
            print(f"== SIGKILL {victim.node_id} ({victim.addr})", flush=True)
            t1 = time.monotonic()
            c.kill(victim.index)
            took = c.wait_status(victim.node_id, "failed", timeout, on_poll=_Printer(t1))
            timings.append((f"{victim.node_id} marked failed by all survivors", took))
            print(f"\n== membership as node0 sees it\n{format_members(c.members(0))}\n")

            leaver = c.nodes[n - 2]
            print(f"== SIGTERM {leaver.node_id} ({leaver.addr}): graceful leave", flush=True)
            t2 = time.monotonic()
            code = c.terminate(leaver.index)
            timings.append((f"{leaver.node_id} exited (code {code}) after leaving",
                            time.monotonic() - t2))  # fmt: skip
            took = c.wait_status(leaver.node_id, "left", timeout, on_poll=_Printer(t2))
            timings.append((f"{leaver.node_id} seen as left by all others", took))
            print(f"\n== membership as node0 sees it\n{format_members(c.members(0))}\n")
        except (TimeoutError, RuntimeError) as e:
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
