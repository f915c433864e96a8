"""slurmrestd and Slurm's JWT key: one home for the REST daemon's files and for HS256 tokens.

``slurm:restd:enabled`` runs ``slurmrestd`` on the controller as its own unprivileged user
(slurmrestd 22.05 refuses root and SlurmUser, and their primary groups), listening on a
unix socket (:data:`SOCKET`) and the pillar's TCP port, with ``rest_auth/jwt`` only: every
request carries ``X-SLURM-USER-NAME`` and ``X-SLURM-USER-TOKEN``, which slurmrestd
forwards (``SLURM_JWT=daemon``) to slurmctld and slurmdbd; they check the token against
the cluster's JWT key (``AuthAltTypes=auth/jwt``, ``AuthAltParameters=jwt_key=...``).

slurmrestd takes everything from its environment (``SLURMRESTD_LISTEN``,
``SLURMRESTD_AUTH_TYPES``, ``SLURMRESTD_OPENAPI_PLUGINS``, ``SLURM_JWT``), so one file,
:data:`ENV_FILE` beside slurm.conf (the ``EnvironmentFile`` of Debian's unit), configures
it under every manager: a systemd drop-in (Debian's unit runs it as root on a unix socket
only), an init script for sysvinit and OpenRC (Debian ships none), and the ``direct``
manager, which reads the same file.

Threat model for the JWT key (whoever holds it makes tokens for any user, root included):

1. **Output, logs, events, job cache**: the key is made on the master
   (:func:`new_key`, 32 random bytes), kept 0600 in the master's file tree and delivered
   by the minion state itself (``cp.cache_file``; the cached copy is deleted at once); state
   changes, runner output and events carry ``sha256:`` of it only (:func:`key_hash`).
   Tokens for users are signed on the master (:func:`sign`) and written to the admin's
   terminal, never returned: no minion return (which the master's job cache keeps) ever
   holds a token or the key.
2. **Process argv**: no command gets the key or a token as an argument; the REST check
   (:func:`rest_get`) sends its token in a header from memory.
3. **The file on disk**: written atomically, 0600 owned by SlurmUser from the first byte.
4. **Tokens**: a bounded lifespan (:data:`MAX_LIFESPAN`), a checked user name; rotating the
   key (``slurm.rotate_jwt_key``) makes every earlier token worthless.
"""

import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import time

from salt_ext.lib.conf import generate

KEY_NAME = generate.JWT_KEY_NAME  # on the master's file server, next to munge.key
# on the controller and the dbd host, in their conf dir (slurm.conf names it); the default:
KEY_PATH = generate.JWT_KEY_PATH
key_path = generate.jwt_key_path
DEFAULT_CONF_DIR = generate.DEFAULT_CONF_DIR
KEY_MODE = 0o600
KEY_BYTES = 32
RUN_DIR = "/run/slurmrestd"
SOCKET = f"{RUN_DIR}/slurmrestd.socket"
PIDFILE = f"{RUN_DIR}/slurmrestd.pid"
LOG = "/var/log/slurm/slurmrestd.log"
ENV_NAME = "slurmrestd.env"


def env_path(conf_dir=generate.DEFAULT_CONF_DIR):
    """slurmrestd's environment file, beside slurm.conf in ``conf_dir``."""
    return f"{conf_dir}/{ENV_NAME}"


ENV_FILE = env_path()  # the default; the drop-in and the init scripts name the plan's
DROPIN = "/etc/systemd/system/slurmrestd.service.d/saltext-slurm.conf"
INIT_SCRIPT = "/etc/init.d/slurmrestd"
BINARY = "/usr/sbin/slurmrestd"
# the user the daemon runs as, for the direct manager and the init scripts (not Slurm's)
RUN_AS = "SALTEXT_SLURMRESTD_USER"
API = "v0.0.38"  # Slurm 22.05's OpenAPI plugins
DEFAULT_LIFESPAN = 1800
MAX_LIFESPAN = 7 * 24 * 3600
CHECK_LIFESPAN = 30
HEADER = "# Managed by saltext-slurm (slurm:restd), edits are overwritten.\n"

_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


class RestdError(ValueError):
    """Bad input (user name, lifespan) or an unusable key; the message names it."""


# --- the key --------------------------------------------------------------------------


def new_key():
    return os.urandom(KEY_BYTES)


def key_hash_bytes(key):
    return "sha256:" + hashlib.sha256(key).hexdigest()


def key_hash(path):
    """``sha256:`` of the key file at ``path`` (FileNotFoundError when absent)."""
    with open(path, "rb") as handle:
        return key_hash_bytes(handle.read())


def read_key(path):
    with open(path, "rb") as handle:
        key = handle.read()
    if len(key) < KEY_BYTES:
        raise RestdError(f"{path}: a JWT key of {len(key)} bytes; want at least {KEY_BYTES}")
    return key


# --- tokens -------------------------------------------------------------------------------


def check_user(user, key="user"):
    """A Slurm user name as a token's ``sun`` claim: a POSIX login name."""
    if not isinstance(user, str) or not _USER.fullmatch(user):
        raise RestdError(
            f"{key}: expected a user name (lower-case letters, digits, '_' or '-', starting "
            f"with a letter or '_', at most 32), got {user!r}"
        )
    return user


def check_lifespan(value, key="lifespan", maximum=MAX_LIFESPAN):
    try:
        number = int(str(value))
    except (TypeError, ValueError):
        number = 0
    if isinstance(value, bool) or not 1 <= number <= maximum:
        raise RestdError(f"{key}: expected whole seconds from 1 to {maximum}, got {value!r}")
    return number


def _b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(key, user, lifespan, now=None):
    """An HS256 JWT for Slurm's auth/jwt (claims as ``scontrol token`` makes them in
    22.05: ``iat``, ``exp``, ``sun`` = the Slurm user name)."""
    check_user(user)
    lifespan = check_lifespan(lifespan)
    issued = int(time.time() if now is None else now)
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = {"iat": issued, "exp": issued + lifespan, "sun": user}
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = _b64(hmac.new(key, signing_input, hashlib.sha256).digest())
    return f"{header}.{payload}.{signature}"


def claims(token):
    """The claims of a token (not verified): for tests and expiry display."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


# --- the daemon's files ---------------------------------------------------------------------


def plugins(accounting):
    """OpenAPI plugins: dbv0.0.38 only with accounting (22.05's plugin stops slurmrestd with
    "slurm not configured with slurmdbd" otherwise)."""
    names = [f"openapi/{API}"]
    if accounting:
        names.append(f"openapi/db{API}")
    return ",".join(names)


def env_text(restd, accounting):
    """:data:`ENV_FILE`: slurmrestd's whole configuration, read by every manager."""
    lines = [
        ("SLURM_JWT", "daemon"),
        ("SLURMRESTD_AUTH_TYPES", "rest_auth/jwt"),
        ("SLURMRESTD_OPENAPI_PLUGINS", plugins(accounting)),
        ("SLURMRESTD_LISTEN", f"unix:{SOCKET},:{restd['port']}"),
        (RUN_AS, restd["user"]),
    ]
    return HEADER + "".join(f"{k}={v}\n" for k, v in lines)


def parse_env(text):
    """``{key: value}`` of an env file (``KEY=value`` lines, ``#`` comments)."""
    values = {}
    for raw in (text or "").splitlines():
        line = raw.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip().strip('"')
    return values


def read_env(path=ENV_FILE):
    try:
        with open(path, encoding="utf-8") as handle:
            return parse_env(handle.read())
    except FileNotFoundError:
        return {}


def systemd_dropin(restd):
    """Over Debian's unit (root, ``unix:/run/slurmrestd.socket`` only): our user, our
    runtime directory, the environment file and an ExecStart without positional sockets."""
    user = restd["user"]
    env_file = restd.get("env_file", ENV_FILE)
    return (
        HEADER
        + "[Service]\n"
        + f"User={user}\nGroup={user}\n"
        + "RuntimeDirectory=slurmrestd\nRuntimeDirectoryMode=0755\n"
        + f"EnvironmentFile={env_file}\n"
        + "ExecStart=\n"
        + f"ExecStart={BINARY}\n"
    )


def sysv_script(restd):
    """An LSB init script (Debian's package has none): start-stop-daemon runs slurmrestd
    in the background as our user, makes the pid file and sends its output to :data:`LOG`."""
    user = restd["user"]
    env_file = restd.get("env_file", ENV_FILE)
    return f"""#!/bin/sh
### BEGIN INIT INFO
# Provides:          slurmrestd
# Required-Start:    $remote_fs $network munge slurmctld
# Required-Stop:     $remote_fs $network
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: Slurm REST API daemon
### END INIT INFO
{HEADER.strip()}
set -a
. {env_file}
set +a
case "$1" in
  start)
    mkdir -p {RUN_DIR}
    chown {user}:{user} {RUN_DIR}
    exec start-stop-daemon --start --quiet --oknodo --background --make-pidfile \\
      --pidfile {PIDFILE} --chuid {user}:{user} --output {LOG} --exec {BINARY}
    ;;
  stop)
    exec start-stop-daemon --stop --quiet --oknodo --retry TERM/20/KILL/5 \\
      --pidfile {PIDFILE} --exec {BINARY}
    ;;
  *)
    echo "Usage: $0 {{start|stop}}" >&2
    exit 3
    ;;
esac
"""


def openrc_script(restd):
    """An OpenRC service: ``command_user`` runs it as our user in the background with a
    pid file. ``use net``, not ``need net``: Debian's OpenRC has no service providing
    ``net`` (ifupdown's ``networking`` provides ``networking``), and ``need`` then refuses
    to start it ("slurmrestd needs service(s) net", seen on a booted OpenRC host). Its
    output goes to :data:`LOG` through whichever start-stop-daemon the system has: Debian's
    OpenRC uses dpkg's, which said "unrecognized option '--stdout'" to ``output_log``."""
    user = restd["user"]
    env_file = restd.get("env_file", ENV_FILE)
    return f"""#!/sbin/openrc-run
{HEADER.strip()}
description="Slurm REST API daemon"
command="{BINARY}"
command_user="{user}:{user}"
command_background=true
pidfile="{PIDFILE}"
# OpenRC's own start-stop-daemon takes --stdout/--stderr (output_log, error_log); Debian's
# OpenRC runs dpkg's, which refuses them and takes --output
if start-stop-daemon --help 2>&1 | grep -q -e --stdout; then
    output_log="{LOG}"
    error_log="{LOG}"
else
    start_stop_daemon_args="--output {LOG}"
fi

depend() {{
    use net
    after munge slurmctld
}}

start_pre() {{
    checkpath -d -o {user}:{user} -m 0755 {RUN_DIR}
    set -a
    . {env_file}
    set +a
}}
"""


def launcher(manager, restd):
    """``(path, text, mode)`` of the manager's own file for slurmrestd, or None (direct)."""
    if manager == "systemd":
        return DROPIN, systemd_dropin(restd), 0o644
    if manager == "sysvinit":
        return INIT_SCRIPT, sysv_script(restd), 0o755
    if manager == "openrc":
        return INIT_SCRIPT, openrc_script(restd), 0o755
    return None


# --- asking it ----------------------------------------------------------------------------

ASK_BOUND = 5


def rest_get(path, port, user=None, token=None, timeout=ASK_BOUND):
    """``(status, body)`` of ``GET path`` on 127.0.0.1:``port``; the token goes in a header
    from memory (never an argv). OSError when nothing answers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {}
    if token:
        headers = {"X-SLURM-USER-NAME": user, "X-SLURM-USER-TOKEN": token}
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read(256 * 1024).decode(errors="replace")
    except (TimeoutError, http.client.HTTPException) as err:
        raise OSError(f"no HTTP answer: {err}") from err
    finally:
        conn.close()


def ask(port):
    """The health answer ``(ok, text)``: slurmrestd answers an unauthenticated request
    with 401 (no token needed to see that it serves)."""
    what = f"GET /slurm/{API}/ping on port {port}"
    try:
        status, _ = rest_get(f"/slurm/{API}/ping", port)
    except OSError as err:
        return False, f"`{what}`: {err}"
    if status in (200, 401):
        return True, f"answers `{what}` ({status} without a token)"
    return False, f"`{what}`: HTTP {status}"


def check(key_path, port, user, lifespan=CHECK_LIFESPAN):
    """One authenticated REST call (``/slurm/v0.0.38/diag``) with a token signed here
    from the local key for ``user``, valid ``lifespan`` s and never shown:
    ``{"ok", "status", "evidence"}``."""
    path = f"/slurm/{API}/diag"
    try:
        token = sign(read_key(key_path), user, lifespan)
    except (OSError, RestdError) as err:
        return {"ok": False, "status": None, "evidence": f"no token: {err}"}
    try:
        status, body = rest_get(path, port, user, token)
    except OSError as err:
        return {"ok": False, "status": None, "evidence": f"GET {path}: {err}"}
    if status != 200:
        said = " ".join(body.split())[:300]
        return {"ok": False, "status": status, "evidence": f"GET {path}: HTTP {status}: {said}"}
    try:
        errors = json.loads(body).get("errors") or []
    except ValueError:
        errors = ["not JSON"]
    if errors:
        return {"ok": False, "status": status, "evidence": f"GET {path}: 200 but {errors!r:.300}"}
    return {"ok": True, "status": 200, "evidence": f"GET {path} as {user}: 200"}
