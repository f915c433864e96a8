"""What every runner module of this extension does the same way: errors come back as a
result with ``retcode: 1`` (``salt-run`` exits 1) instead of Salt's traceback dump, and
events go to the master's bus without ever failing the run.

It imports Salt, so it lives outside :mod:`salt_ext.lib` (which is Salt-free); only
runner modules use it."""

import contextlib
import contextvars
import functools
import inspect
import logging
import os

import salt.daemons.masterapi
import salt.utils.event
from salt.exceptions import SaltRunnerError

log = logging.getLogger(__name__)

_JID = contextvars.ContextVar("saltext_slurm_runner_jid", default=None)


def current_jid():
    """The job id of the runner call in progress (``None`` outside one)."""
    return _JID.get()


def _take_jid(*namespaces):
    """Salt's runner client puts ``__jid__`` into the globals of one function per module
    right before the call: the wrapper's (this module's) for decorated functions. Take it
    out, so a later call that Salt does not inject into never sees a stale job id."""
    found = None
    for namespace in namespaces:
        jid = namespace.pop("__jid__", None)
        found = found or jid
    return found


def errors_as_result(module, *errors):
    """Decorator for runner entry points of ``module`` (``slurm``, ``keyvault``): a
    ``SaltRunnerError`` (or one of ``errors``) becomes ``{"result": False, "error":
    message}``, and any ``result: False`` carries ``retcode: 1``."""
    caught = (SaltRunnerError, *errors)

    def decorate(func):
        signature = inspect.signature(func)

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            try:
                # Salt turns a missing or unknown argument into a usage text with exit 0
                signature.bind(*args, **kwargs)
            except TypeError as err:
                message = (
                    f"{module}.{func.__name__}: {err}; see `salt-run -d {module}.{func.__name__}`"
                )
                log.error("%s", message)
                return {"result": False, "error": message, "retcode": 1}
            # a nested call (one entry point calling another) keeps the outer job id
            token = _JID.set(_take_jid(globals(), func.__globals__) or _JID.get())
            try:
                ret = func(*args, **kwargs)
            except caught as err:
                log.error("%s.%s: %s", module, func.__name__, err)
                ret = {"result": False, "error": str(err)}
            finally:
                _JID.reset(token)
            if isinstance(ret, dict) and ret.get("result") is False:
                ret["retcode"] = 1
            return ret

        return wrapper

    return decorate


def fire_master_event(opts, tag, data, level=logging.WARNING):
    """Send ``data`` as ``tag`` on the master's event bus; a bus that is down is logged at
    ``level``, not raised (the event reports the work, it is not the work)."""
    try:
        with salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=False) as bus:
            bus.fire_event(data, tag)
    except Exception as err:  # pylint: disable=broad-except
        log.log(level, "event %s not sent: %s", tag, err)


@contextlib.contextmanager
def remote_funcs(opts):
    """Salt's master-side ``RemoteFuncs`` (mine, file server), destroyed on exit.

    Salt's own ``mine.get`` runner leaves its MasterMinion to the garbage collector, and
    ``MasterMinion.destroy()`` leaves attributes that its finalizer still reads as "not
    closed": each call printed an "unclosed MasterMinion" warning at the end of ``salt-run``
    output. Here the MasterMinion is destroyed and marked so."""
    funcs = salt.daemons.masterapi.RemoteFuncs(opts)
    try:
        yield funcs
    finally:
        mminion = funcs.mminion
        funcs.destroy()
        if mminion is not None:
            mminion.returners = mminion.functions = mminion.utils = None


def open_tty(asked, what="the secret"):
    """A write-only descriptor of ``salt-run``'s terminal (``/dev/tty``) for a secret that
    must not be a runner return (Salt logs returns at debug, keeps them in the job cache and
    publishes them as ``salt/run/<jid>/ret``); ``SaltRunnerError`` naming ``to_tty`` when
    there is none. ``asked``: the caller passed ``to_tty=True`` explicitly."""
    try:
        return os.open("/dev/tty", os.O_WRONLY | os.O_NOCTTY)
    except OSError as err:
        if asked:
            hint = "run it in a terminal, or without to_tty=True"
        else:
            hint = (
                f"salt-run prints {what} on its terminal only, as its return would reach "
                "salt-run's debug log, the job cache and the salt/run/<jid>/ret event: run it "
                "in a terminal, or pass to_tty=False to accept that"
            )
        raise SaltRunnerError(
            f"to_tty: salt-run has no controlling terminal ({err.strerror}); {hint}"
        ) from None


def bool_arg(name, value):
    """``None`` (not given) or a boolean, from a bool or the strings salt-run passes;
    ``SaltRunnerError`` naming the argument otherwise."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "false"):
        return text == "true"
    raise SaltRunnerError(f"{name}: expected True or False, got {value!r}")
