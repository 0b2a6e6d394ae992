"""`agora keys`: make the cluster's keyring, issue client credentials, rotate keys.

    agora keys generate --out cluster.key
    agora keys client   --cluster-key cluster.key --role submit --name alice --out alice.key
    agora keys list     --cluster-key cluster.key
    agora keys rotate   install --cluster-key cluster.key --new new.key
    agora keys rotate   use     --cluster-key cluster.key --new new.key
    agora keys rotate   remove  --cluster-key cluster.key --old old.key

A rotation edits the keyring file in place; agents re-read their file within a second (copy
the edited file to every node between steps). Serf's order, without downtime: *install* the
new key everywhere (accepted, not yet used), *use* it everywhere (agents serve and dial with it,
the old one still accepted), then *remove* the old one. Client credentials are issued for the
primary key: issue new ones after `use`, before `remove`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gossip.auth import ROLES, Credential, KeyFileError, Keyring, key_id

PROG = "agora keys"


def _fail(msg: str) -> int:
    print(f"agora: error: {msg}", file=sys.stderr)
    return 1


def _refuse_overwrite(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise KeyFileError(f"{path} exists; not overwriting a key (use --force)")


def cmd_generate(args: argparse.Namespace) -> int:
    out = Path(args.out)
    _refuse_overwrite(out, args.force)
    ring = Keyring.generate()
    ring.save(out)
    print(f"wrote cluster key {key_id(ring.primary)} to {out} (mode 0600); give it to every "
          f"agent with --cluster-key {out}")  # fmt: skip
    return 0


def cmd_client(args: argparse.Namespace) -> int:
    ring = Keyring.load(args.cluster_key)
    cred = Credential.issue(ring, args.role, args.name)
    out = Path(args.out)
    _refuse_overwrite(out, args.force)
    cred.save(out)
    print(f"wrote {args.role} credential for {args.name!r} to {out} (mode 0600), valid while "
          f"key {cred.cluster_key_id} is in the ring")  # fmt: skip
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    ring = Keyring.load(args.cluster_key)
    for i, kid in enumerate(ring.ids()):
        print(f"{kid}  {'primary (in use)' if i == 0 else 'accepted'}")
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    path = Path(args.cluster_key)
    ring = Keyring.load(path)
    keys = list(ring.secrets)
    if args.step == "remove":
        if not args.old:
            raise KeyFileError("rotate remove needs --old KEYFILE (the key to drop)")
        old = Keyring.load(args.old).primary
        if old not in keys:
            raise KeyFileError(f"key {key_id(old)} is not in {path}")
        if keys[0] == old:
            raise KeyFileError(f"key {key_id(old)} is the one in use; 'use' another one first")
        keys.remove(old)
        done = f"removed {key_id(old)}"
    else:
        if not args.new:
            raise KeyFileError(f"rotate {args.step} needs --new KEYFILE")
        new = Keyring.load(args.new).primary
        if args.step == "install":
            if new in keys:
                raise KeyFileError(f"key {key_id(new)} is already in {path}")
            keys.append(new)
            done = f"installed {key_id(new)} (accepted, not yet used)"
        else:  # use
            if new not in keys:
                raise KeyFileError(f"key {key_id(new)} is not installed in {path}; install first")
            keys.remove(new)
            keys.insert(0, new)
            done = f"now using {key_id(new)}"
    try:
        Keyring(tuple(keys)).save(path)
    except ValueError as e:
        raise KeyFileError(f"{path}: {e}") from None
    print(f"{path}: {done}; keys: {', '.join(Keyring(tuple(keys)).ids())}")
    return 0


def _run(func: Any) -> Any:
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except KeyFileError as e:
            return _fail(str(e))
        except OSError as e:
            return _fail(f"{e.filename or ''}: {e.strerror}")
    return wrapped


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "keys", help="cluster keys and client credentials (CURVE)",
        description="Make the cluster keyring, issue client credentials and rotate keys "
        "without downtime. See docs/security.md.",
    )  # fmt: skip
    ks = p.add_subparsers(dest="keys_command", metavar="COMMAND", required=True)
    g = ks.add_parser("generate", help="a new cluster key (keyring of one key)")
    g.add_argument("--out", required=True, metavar="FILE")
    g.add_argument("--force", action="store_true", help="overwrite FILE")
    g.set_defaults(func=_run(cmd_generate))
    c = ks.add_parser("client", help="a client credential with a role, for the key in use")
    c.add_argument("--cluster-key", required=True, metavar="FILE")
    c.add_argument("--role", required=True, choices=ROLES,
                   help="read: members, stats, tasks (others' output hidden); submit: also "
                   "submit, and cancel/read its own tasks; admin: everything")  # fmt: skip
    c.add_argument("--name", required=True, help="who this is for (letters, digits, -_.)")
    c.add_argument("--out", required=True, metavar="FILE")
    c.add_argument("--force", action="store_true", help="overwrite FILE")
    c.set_defaults(func=_run(cmd_client))
    li = ks.add_parser("list", help="the keys of a keyring, the one in use first")
    li.add_argument("--cluster-key", required=True, metavar="FILE")
    li.set_defaults(func=_run(cmd_list))
    r = ks.add_parser("rotate", help="one step of a key rotation: install, use, remove")
    r.add_argument("step", choices=("install", "use", "remove"))
    r.add_argument("--cluster-key", required=True, metavar="FILE", help="the keyring to edit")
    r.add_argument("--new", metavar="FILE", help="install/use: the new key (keys generate)")
    r.add_argument("--old", metavar="FILE", help="remove: the key to drop")
    r.set_defaults(func=_run(cmd_rotate))
