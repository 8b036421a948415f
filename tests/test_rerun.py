"""Re-run: the args and kwargs are recovered from Celery's reprs only when that is exact."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from celery.utils.saferepr import saferepr
from hypothesis import given, settings
from hypothesis import strategies as st

from dashboard.core import rerun
from dashboard.core.masking import MASK
from dashboard.core.rerun import NotRecoverable, plan, recover

pytestmark = pytest.mark.unit


def celery_repr(value: Any) -> str:
    """What Celery puts into task events (celery.app.amqp: saferepr with argsrepr_maxsize, maxlevels=3)."""
    return saferepr(value, rerun.REPR_MAXSIZE, maxlevels=3)


def refused(args: str | None, kwargs: str | None = "{}") -> NotRecoverable:
    with pytest.raises(NotRecoverable) as info:
        recover(args, kwargs)
    return info.value


def test_plain_literals_are_recovered() -> None:
    assert recover("(2, 3)", "{}") == ([2, 3], {})
    assert recover("[1, 'a']", "{'card': '4000', 'amount': 42.5}") == ([1, "a"], {"card": "4000", "amount": 42.5})
    assert recover(celery_repr((None, True, -0.5, "it's", [1, {"k": 2}])), "{}") == (
        [None, True, -0.5, "it's", [1, {"k": 2}]],
        {},
    )


def test_missing_arguments() -> None:
    err = refused(None, "{}")
    assert err.code == rerun.MISSING and "not seen" in str(err)
    assert refused("()", None).code == rerun.MISSING


def test_masked_arguments() -> None:
    err = refused("()", f"{{'password': '{MASK}'}}")
    assert err.code == rerun.MASKED and "masked" in str(err)


def test_truncated_by_length_mark() -> None:
    long_list = list(range(600))
    text = celery_repr((long_list,))
    assert text.endswith(", ...],)")  # how Celery cuts a long container
    assert refused(text).code == rerun.TRUNCATED


def test_truncated_string_mark() -> None:
    # A long string with a space early on is cut at that space: a short repr that still lost data.
    text = celery_repr(("a " + "b" * 2000,))
    assert text == "('a...',)"
    err = refused(text)
    assert err.code == rerun.TRUNCATED and "'...'" in str(err)


def test_truncated_by_depth() -> None:
    text = celery_repr(([[[1]]],))
    assert text == "([[[...]]],)"
    assert refused(text).code == rerun.TRUNCATED
    assert refused("()", celery_repr({"a": {"b": {"c": {"d": 1}}}})).code == rerun.TRUNCATED


def test_near_the_length_limit_counts_as_truncated() -> None:
    text = "('" + "x" * (rerun.REPR_MAXSIZE - 6) + "',)"  # a complete literal, but at Celery's limit
    err = refused(text)
    assert err.code == rerun.TRUNCATED and str(rerun.REPR_MAXSIZE) in str(err)


def test_object_reprs_are_not_literals() -> None:
    err = refused("(<Foo object at 0x7f3a2c1b>,)")
    assert err.code == rerun.NOT_LITERAL and "<" in str(err)
    assert refused("(datetime.datetime(2024, 1, 1, 0, 0),)").code == rerun.NOT_LITERAL
    assert refused("(inf,)").code == rerun.NOT_LITERAL
    assert refused("(__import__('os'),)").code == rerun.NOT_LITERAL


def test_wrong_shapes() -> None:
    assert refused("42").code == rerun.WRONG_SHAPE
    assert refused("'abc'").code == rerun.WRONG_SHAPE
    assert refused("()", "[1]").code == rerun.WRONG_SHAPE
    assert refused("()", "{1: 2}").code == rerun.WRONG_SHAPE


def test_reprs_celery_does_not_print_exactly() -> None:
    # Celery does not escape backslashes: 'a\nb' in a repr is a-backslash-n-b, not a line break.
    assert refused(celery_repr(("a\\nb",))).code == rerun.NOT_EXACT
    assert refused(celery_repr((b"\xde\xad",))).code in (rerun.NOT_EXACT, rerun.NOT_LITERAL)
    assert refused("({1, 2},)").code == rerun.NOT_EXACT
    assert refused('("double quoted",)').code == rerun.NOT_EXACT  # not Celery's form: not checkable
    assert refused(celery_repr(("line\nbreak",))).code == rerun.NOT_LITERAL


def test_plan_of_a_record() -> None:
    rec = SimpleNamespace(
        name="dashboard.demo.add", args="(1, 2)", kwargs="{}", queue="celery", exchange="", routing_key="celery"
    )
    assert plan(rec).as_dict() == {
        "possible": True,
        "reason": None,
        "name": "dashboard.demo.add",
        "args": [1, 2],
        "kwargs": {},
        "queue": "celery",
    }
    rec.name = None
    p = plan(rec)
    assert not p.possible and p.code == rerun.NO_NAME and p.args is None
    rec.name, rec.args = "x", "(<object>,)"
    assert plan(rec).as_dict()["reason"].startswith("the args repr is not a Python literal")


# -- properties ---------------------------------------------------------------------------------
# Strings as people pass them: any printable text without backslashes or line breaks (Celery does
# not escape those), and not ending in Celery's truncation mark.
texts = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\\\u2028\u2029\x85"), max_size=12
).filter(lambda s: not s.endswith("...") and MASK not in s)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**12), 10**12), st.floats(allow_nan=False, allow_infinity=False), texts
)
# Containers nest at most two levels inside args (Celery's maxlevels=3 counts the args tuple).
inner = st.one_of(scalars, st.lists(scalars, max_size=4), st.dictionaries(texts, scalars, max_size=3))
values = st.one_of(
    scalars, st.lists(inner, max_size=4), st.tuples(inner, inner), st.dictionaries(texts, inner, max_size=3)
)
arg_lists = st.lists(values, max_size=5).map(tuple)
kwarg_dicts = st.dictionaries(texts, values, max_size=4)


@settings(max_examples=400, deadline=None)
@given(arg_lists, kwarg_dicts)
def test_round_trip_of_literal_arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    args_repr, kwargs_repr = celery_repr(args), celery_repr(kwargs)
    if max(len(args_repr), len(kwargs_repr)) >= rerun.REPR_MAXSIZE - rerun.NEAR_LIMIT:
        return  # refused as possibly truncated (tested above)
    assert recover(args_repr, kwargs_repr) == (list(args), kwargs)


# Anything at all: deep, long, backslashes, bytes, control characters, sets.
anything = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=40), st.binary(max_size=8)
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.tuples(children, children),
        st.dictionaries(st.text(max_size=5), children, max_size=4),
        st.frozensets(st.integers(), max_size=3),
    ),
    max_leaves=40,
)


@settings(max_examples=600, deadline=None)
@given(st.lists(anything, max_size=6).map(tuple), st.dictionaries(st.text(max_size=6), anything, max_size=4))
def test_never_recovers_wrong_values(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    try:
        got = recover(celery_repr(args), celery_repr(kwargs))
    except NotRecoverable as exc:
        assert exc.code and str(exc)
        return
    assert got == (list(args), kwargs)
    assert [type(a) for a in got[0]] == [type(a) for a in args]  # 1 stays int, 1.0 float, True bool
