"""Who may ask an agent what: the role each client request needs, and what a role may read.

Roles are cumulative (`gossip.auth.ROLES`): ``read`` lists members, stats and tasks, but sees
no task's environment or output; ``submit`` also submits, and reads in full, cancels and
fetches the logs of its own tasks; ``admin`` may do everything (agents, holding the cluster
key, are admins). On a plain (keyless) cluster everyone is an admin.
"""

from __future__ import annotations

from typing import Any

from gossip.auth import Principal

QUERY_ROLE = {
    "members": "read",
    "stats": "read",
    "tasks": "read",
    "status": "read",
    "logs": "submit",
    "submit": "submit",
    "cancel": "submit",
    "set_labels": "admin",
}
REDACTED = "(hidden: not your task)"
ANYONE = Principal("", "admin", is_node=False)  # the caller on a plain cluster


def refusal(principal: Principal, what: str) -> str:
    """Why `principal` may not make request `what`, or "" if it may."""
    need = QUERY_ROLE.get(what)
    if need is None or principal.may(need):
        return ""
    return f"{what} needs the {need} role; this client has {principal.role}"


def owns(principal: Principal, submitter: str) -> bool:
    """May `principal` see in full, cancel and read the logs of a task `submitter` submitted?"""
    return principal.role == "admin" or (bool(submitter) and submitter == principal.name)


def visible_row(principal: Principal, row: dict[str, Any]) -> dict[str, Any]:
    """A task row as `principal` may see it: output and arguments hidden if not theirs."""
    if owns(principal, row.get("submitter", "")):
        return row
    shown = dict(row)
    shown["stdout"] = shown["stderr"] = ""
    if shown.get("argv"):
        shown["argv"] = shown["argv"][:1] + ([REDACTED] if len(shown["argv"]) > 1 else [])
    shown.pop("env", None)
    return shown
