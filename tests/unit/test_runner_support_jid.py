"""The runner's job id as Salt's runner client hands it over (see runner_support._take_jid)."""

from salt_ext import runner_support


def _entry_points():
    seen = []

    @runner_support.errors_as_result("slurm")
    def inner():
        seen.append(("inner", runner_support.current_jid()))
        return {"result": True}

    @runner_support.errors_as_result("slurm")
    def outer():
        seen.append(("outer", runner_support.current_jid()))
        inner()
        return {"result": True}

    return outer, seen


def test_the_injected_jid_is_seen_during_the_call_and_nested_calls_then_gone():
    outer, seen = _entry_points()
    # Salt injects into the globals of the function it finds: the wrapper's module here
    outer.__globals__["__jid__"] = "20261128101500123456"
    outer()
    assert seen == [("outer", "20261128101500123456"), ("inner", "20261128101500123456")]
    assert runner_support.current_jid() is None
    seen.clear()
    outer()  # the next call without an injection never sees the old job id
    assert seen == [("outer", None), ("inner", None)]
