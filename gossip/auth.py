"""Cluster keys, client credentials and the principals they authenticate.

The cryptography is ZeroMQ's CURVE (libsodium, via pyzmq), and for datagrams the same
primitives through PyNaCl (`gossip.datagram`); nothing here encrypts or signs. What this module
does is decide *which* keys a cluster uses:

- A **cluster key** is 32 random bytes kept in a file readable by its owner only. A key file
  holds a *keyring*: the primary key first, then keys still accepted during a rotation.
- Every CURVE keypair is derived from a cluster key with HMAC-SHA256 under a label, so an
  agent can recompute the public key any principal must present:
  the agents' server keypair (``server``), each node's own keypair (``node`` + node id) and
  each client's keypair (``client`` + role + name).
- An agent's envelope sender is its node id; a client's is ``@role:name``. A message counts
  only if the CURVE key of the connection it arrived on (ZAP's User-Id) is the key derived for
  that sender: a client cannot speak as a node or with a role it was not given, and a node
  cannot speak as another node.

Limit, by design of a shared secret (as with Serf's gossip key): whoever holds the cluster
key can derive every key. Agents are trusted with it; clients get only their own keypair.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import os
import secrets
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path

import zmq
from zmq.utils import z85

from gossip.transport import CurveKeys

CLUSTER_KEY_KIND = "agora-cluster-key"
CLIENT_KEY_KIND = "agora-client-key"
ROLES = ("read", "submit", "admin")  # each role may do everything the ones before it may
CLIENT_PREFIX = "@"  # envelope senders of clients: "@role:name"; node ids never start so
SECRET_BYTES = 32
MAX_KEYS = 8  # keys in one ring (a rotation needs two)
MAX_CLIENT_NAME = 64


class KeyFileError(Exception):
    """A key file that cannot be used (the message is one line, for a human)."""


@dataclass(frozen=True, slots=True)
class Keypair:
    public: bytes  # z85, 40 bytes: what ZeroMQ's CURVE options take
    secret: bytes


def _derive(cluster_secret: bytes, *label: str) -> Keypair:
    info = "\0".join(("agora", *label)).encode()
    seed = hmac.new(cluster_secret, info, hashlib.sha256).digest()
    secret = z85.encode(seed)
    return Keypair(zmq.curve_public(secret), secret)


def server_keypair(cluster_secret: bytes) -> Keypair:
    return _derive(cluster_secret, "server")


def node_keypair(cluster_secret: bytes, node_id: str) -> Keypair:
    return _derive(cluster_secret, "node", node_id)


def client_keypair(cluster_secret: bytes, role: str, name: str) -> Keypair:
    return _derive(cluster_secret, "client", role, name)


def key_id(cluster_secret: bytes) -> str:
    """A short fingerprint that names a key in listings and logs (reveals nothing usable)."""
    return hashlib.sha256(b"agora key id\0" + cluster_secret).hexdigest()[:12]


def client_sender(role: str, name: str) -> str:
    return f"{CLIENT_PREFIX}{role}:{name}"


def check_client_name(name: str) -> str:
    """The problem with a client name, or "" if it is fine."""
    if not name or len(name) > MAX_CLIENT_NAME:
        return f"a client name is 1 to {MAX_CLIENT_NAME} characters"
    if not all(c.isalnum() or c in "-_." for c in name):
        return "a client name has only letters, digits, '-', '_' and '.'"
    return ""


# ------------------------------------------------------------------ files


def _check_private(path: Path) -> None:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such key file") from None
    except OSError as e:
        raise KeyFileError(f"{path}: cannot read key file: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"{path}: not a regular file")
    if st.st_mode & 0o077:
        raise KeyFileError(
            f"{path}: key file is readable by others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"run: chmod 600 {path}"
        )


def _read_toml(path: Path, kind: str, *also: str) -> dict:
    """The key file's table, if it is private and of `kind` (or one of `also`)."""
    _check_private(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise KeyFileError(f"{path}: cannot read key file: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise KeyFileError(f"{path}: not a key file (malformed: {e})") from None
    found = data.get("kind")
    if found != kind and found not in also:
        what = {CLUSTER_KEY_KIND: "a cluster key", CLIENT_KEY_KIND: "a client key"}
        raise KeyFileError(
            f"{path}: expected {what.get(kind, kind)} file (kind = {kind!r}), "
            f"found kind = {found!r}"
        )
    return data


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path` with mode 0600 from the first byte (atomic rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _decode_secret(path: Path, text: object) -> bytes:
    if not isinstance(text, str):
        raise KeyFileError(f"{path}: a key must be a base64 string")
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raise KeyFileError(f"{path}: a key is not valid base64") from None
    if len(raw) != SECRET_BYTES:
        raise KeyFileError(f"{path}: a key must be {SECRET_BYTES} bytes, got {len(raw)}")
    return raw


@dataclass(frozen=True, slots=True)
class Keyring:
    """The cluster keys an agent accepts; `primary` is the one it uses."""

    secrets: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not self.secrets:
            raise ValueError("a keyring holds at least one key")

    @property
    def primary(self) -> bytes:
        return self.secrets[0]

    @staticmethod
    def generate() -> Keyring:
        return Keyring((secrets.token_bytes(SECRET_BYTES),))

    @staticmethod
    def load(path: str | Path) -> Keyring:
        path = Path(path)
        return Keyring._from_table(path, _read_toml(path, CLUSTER_KEY_KIND))

    @staticmethod
    def _from_table(path: Path, data: dict) -> Keyring:
        keys = data.get("keys")
        if not isinstance(keys, list) or not keys:
            raise KeyFileError(f"{path}: 'keys' must be a non-empty list (primary first)")
        if len(keys) > MAX_KEYS:
            raise KeyFileError(f"{path}: at most {MAX_KEYS} keys in a ring, found {len(keys)}")
        ring = tuple(_decode_secret(path, k) for k in keys)
        if len(set(ring)) != len(ring):
            raise KeyFileError(f"{path}: the same key is listed twice")
        return Keyring(ring)

    def save(self, path: str | Path) -> None:
        lines = [
            "# agora cluster keyring: keep it secret (mode 0600). The first key is the one in",
            "# use; the others are still accepted (a rotation in progress). See docs/security.md.",
            f'kind = "{CLUSTER_KEY_KIND}"',
            "keys = [",
            *(f'  "{base64.b64encode(s).decode()}",  # {key_id(s)}' for s in self.secrets),
            "]",
        ]
        _write_private(Path(path), "\n".join(lines) + "\n")

    def ids(self) -> list[str]:
        return [key_id(s) for s in self.secrets]


@dataclass(frozen=True, slots=True)
class Credential:
    """What a client presents: its own CURVE keypair and the agents' server key."""

    name: str
    role: str
    keypair: Keypair
    server_public: bytes
    cluster_key_id: str

    @property
    def sender(self) -> str:
        return client_sender(self.role, self.name)

    @staticmethod
    def issue(ring: Keyring, role: str, name: str) -> Credential:
        if role not in ROLES:
            raise KeyFileError(f"unknown role {role!r} (known: {', '.join(ROLES)})")
        problem = check_client_name(name)
        if problem:
            raise KeyFileError(f"bad client name {name!r}: {problem}")
        s = ring.primary
        return Credential(name, role, client_keypair(s, role, name),
                          server_keypair(s).public, key_id(s))  # fmt: skip

    @staticmethod
    def load(path: str | Path) -> Credential:
        """A client key file; a cluster key file also works (as the admin client ``operator``)."""
        path = Path(path)
        data = _read_toml(path, CLIENT_KEY_KIND, CLUSTER_KEY_KIND)  # read once
        if data["kind"] == CLUSTER_KEY_KIND:
            return Credential.issue(Keyring._from_table(path, data), "admin", "operator")
        name, role = data.get("name"), data.get("role")
        if not isinstance(name, str) or check_client_name(name):
            raise KeyFileError(f"{path}: bad or missing client name")
        if role not in ROLES:
            raise KeyFileError(f"{path}: bad or missing role (known: {', '.join(ROLES)})")
        fields = {}
        for k in ("secret", "server"):
            v = data.get(k)
            if not isinstance(v, str) or len(v) != 40:
                raise KeyFileError(f"{path}: '{k}' must be a 40-character z85 key")
            fields[k] = v.encode()
        try:
            public = zmq.curve_public(fields["secret"])
        except (ValueError, zmq.ZMQError):
            raise KeyFileError(f"{path}: 'secret' is not a valid z85 key") from None
        return Credential(name, role, Keypair(public, fields["secret"]), fields["server"],
                          str(data.get("cluster_key_id", "")))  # fmt: skip

    def save(self, path: str | Path) -> None:
        text = "\n".join([
            "# agora client credential: keep it secret (mode 0600). See docs/security.md.",
            f'kind = "{CLIENT_KEY_KIND}"',
            f'name = "{self.name}"',
            f'role = "{self.role}"',
            f'secret = "{self.keypair.secret.decode()}"',
            f'server = "{self.server_public.decode()}"',
            f'cluster_key_id = "{self.cluster_key_id}"',
        ])  # fmt: skip
        _write_private(Path(path), text + "\n")


# ------------------------------------------------------------------ verifying senders


@dataclass(frozen=True, slots=True)
class Principal:
    """Who sent a message, as its key proves: a node (by id) or a client (name and role)."""

    name: str
    role: str  # nodes hold the cluster key: "admin"
    is_node: bool

    def may(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


class Verifier:
    """Maps (envelope sender, connection key) to the principal it proves, or None.

    Results are cached (bounded LRU): a derivation costs tens of microseconds, and a flood
    of invented senders must not grow memory.
    """

    def __init__(self, ring: Keyring, cache_size: int = 4096) -> None:
        self.ring = ring
        self._cache: collections.OrderedDict[tuple[str, str], Principal | None] = (
            collections.OrderedDict())  # fmt: skip
        self._cache_size = cache_size

    def principal(self, sender: str, user_id: str) -> Principal | None:
        key = (sender, user_id)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        found = self._verify(sender, user_id.encode())
        self._cache[key] = found
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return found

    def _verify(self, sender: str, public: bytes) -> Principal | None:
        if sender.startswith(CLIENT_PREFIX):
            role, sep, name = sender[1:].partition(":")
            if not sep or role not in ROLES or check_client_name(name):
                return None
            derive = lambda s: client_keypair(s, role, name)  # noqa: E731
            principal = Principal(name, role, is_node=False)
        else:
            derive = lambda s: node_keypair(s, sender)  # noqa: E731
            principal = Principal(sender, "admin", is_node=True)
        for s in self.ring.secrets:
            if hmac.compare_digest(derive(s).public, public):
                return principal
        return None


def node_curve_keys(ring: Keyring, node_id: str) -> CurveKeys:
    """The transport keys of agent `node_id`: serve the primary, dial with every key in order."""
    server = server_keypair(ring.primary)
    dial = []
    accept = []
    for s in ring.secrets:
        own = node_keypair(s, node_id)
        ring_server = server_keypair(s)
        dial.append((ring_server.public, own.public, own.secret))
        accept.append((ring_server.public, ring_server.secret))
    return CurveKeys(server.public, server.secret, tuple(dial), tuple(accept))
