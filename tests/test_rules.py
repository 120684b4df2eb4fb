"""The domain rules that exist once, tested on their own: the quota split, names, cursors, the read rule."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import BigInteger, cast, literal, select

from storage_core import names
from storage_core.accounting import Left, Split, split_charge, split_refund
from storage_core.auth import ANONYMOUS_PRINCIPAL, AccessPolicy, BucketFacts, PresignedRead, Principal
from storage_core.cursors import decode_cursor, encode_cursor
from storage_core.errors import InvalidArgument

amounts = st.integers(min_value=0, max_value=10**15)
lefts = st.builds(Left, amounts, amounts, amounts)
FAST = settings(max_examples=500, deadline=None)


# ---- the quota split ---------------------------------------------------------------------------

@FAST
@given(st.integers(min_value=0, max_value=3 * 10**15), lefts)
def test_a_charge_never_exceeds_what_is_left_and_takes_the_quotas_in_order(size: int, left: Left) -> None:
    split = split_charge(size, left)
    if size > left.total:
        assert split is None
        return
    assert split is not None and split.total == size
    assert 0 <= split.charged <= left.charged and 0 <= split.monthly_free <= left.monthly_free
    assert 0 <= split.free <= left.free
    # charged, then monthly free, then one-time free: a later quota pays only once the earlier ones are spent
    if split.monthly_free:
        assert split.charged == left.charged
    if split.free:
        assert split.charged == left.charged and split.monthly_free == left.monthly_free


@FAST
@given(lefts, st.data())
def test_a_refund_is_the_inverse_of_a_charge(left: Left, data: st.DataObject) -> None:
    size = data.draw(st.integers(min_value=0, max_value=left.total))
    refunded = data.draw(st.integers(min_value=0, max_value=size))
    split = split_charge(size, left)
    assert split is not None
    back = split_refund(refunded, split)
    assert back.total == refunded
    # newest first: what is left after a partial refund is what charging only the delivered bytes leaves
    assert left.after(split).restored(back) == left.after(split_charge(size - refunded, left))
    assert left.after(split).restored(split_refund(size, split)) == left


def test_refund_never_gives_back_more_than_was_charged() -> None:
    assert split_refund(100, Split(1, 2, 3)) == Split(1, 2, 3)
    assert split_refund(-5, Split(1, 2, 3)) == Split()


def test_a_quota_lowered_below_its_consumption_leaves_nothing() -> None:
    assert Left.of_month(10, 25, 5, 1, 0) == Left(0, 4, 0)


@pytest.mark.parametrize(("size", "expected"), [
    (0, Split()), (60, Split(60, 0, 0)), (120, Split(100, 20, 0)), (180, Split(100, 50, 30)), (181, None)])
def test_greenfield_order_examples(size: int, expected: Split | None) -> None:
    assert split_charge(size, Left(100, 50, 30)) == expected


# ---- names -------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["a" * 64 + "\n", "A" * 64, "a" * 63, "a" * 65, "g" * 64, " " + "a" * 63, ""])
def test_checksum_validator_is_exact(value: str) -> None:
    assert not names.is_checksum(value)
    with pytest.raises(InvalidArgument):
        names.validate_checksum(value)


@pytest.mark.parametrize("name", ["ab", "a" * 64, "Bucket", "bad_name", "-abc", "abc-", "a..b", "a.-b",
                                  "192.168.1.1", "xn--abc", "sthree-abc", "amzn-s3-demo-x", "abc-s3alias",
                                  "abc--ol-s3", "abc.mrap", "abc--x-s3", "abc--table-s3", "abc\n"])
def test_bucket_names_follow_every_s3_rule(name: str) -> None:
    with pytest.raises(InvalidArgument):
        names.validate_bucket_name(name)


@pytest.mark.parametrize("name", ["abc", "my.bucket-1", "a" * 63, "xn-abc", "s3alias-abc"])
def test_valid_bucket_names(name: str) -> None:
    assert names.validate_bucket_name(name) == name


@pytest.mark.parametrize("name", ["hot\n", "", "-hot", "h\x00t", "a" * 64, "h t"])
def test_location_names_hold_no_control_characters(name: str) -> None:
    with pytest.raises(InvalidArgument):
        names.validate_location_name(name)


# ---- cursors -----------------------------------------------------------------------------------

@given(st.integers(min_value=-(2**63), max_value=2**63 - 1), st.integers(min_value=0, max_value=2**63 - 1))
def test_record_cursors_round_trip(timestamp_us: int, record_id: int) -> None:
    assert decode_cursor(encode_cursor(timestamp_us, record_id), int, int) == (timestamp_us, record_id)


@given(st.text(min_size=1, max_size=50))
def test_key_cursors_round_trip(key: str) -> None:
    assert decode_cursor(encode_cursor(key), str) == (key,)


@pytest.mark.parametrize("cursor", ["nonsense!", encode_cursor("a"), encode_cursor(1, "2"), encode_cursor(1, 2, 3),
                                    "e30", "W3RydWUsMV0"])
def test_foreign_cursors_are_refused(cursor: str) -> None:
    with pytest.raises(InvalidArgument):
        decode_cursor(cursor, int, int)


# ---- the read rule: can_read and its SQL form agree ------------------------------------------

def presigned(account: str, bucket: str, key: str = "obj", bucket_id: int = 2, admin: bool = False) -> Principal:
    return Principal(account, presigned=PresignedRead(bucket, key, bucket_id, issued_us=1000, admin=admin))


PRINCIPALS = [
    ANONYMOUS_PRINCIPAL,
    Principal("olivia"),
    Principal("admin", frozenset({"admin"})),
    presigned("olivia", "private"),
    presigned("olivia", "public", bucket_id=1),
    presigned("olivia", "private", bucket_id=99),  # signed for a bucket of that name that was deleted
    presigned("mallory", "private"),  # signed by someone who no longer owns it
    presigned("root", "other", bucket_id=3, admin=True),
    Principal("mallory"),
]
BUCKETS = [BucketFacts(1, "public", "olivia", "public-read"), BucketFacts(2, "private", "olivia", "private"),
           BucketFacts(3, "other", "mallory", "private")]
KEYS = ["obj", "another"]
REVOCATIONS = [None, 500, 1000, 2000]  # the signer revoked its URLs before, at, or after the signing


def test_the_sql_form_of_the_read_rule_agrees_with_can_read(engine) -> None:
    policy = AccessPolicy()
    allowed = 0
    with engine.connect() as connection:
        for principal, bucket, key, revoked in itertools.product(PRINCIPALS, BUCKETS, KEYS, REVOCATIONS):
            row = select(literal(bucket.id).label("id"), literal(bucket.name).label("name"),
                         literal(bucket.owner).label("owner"), literal(bucket.visibility).label("visibility"),
                         literal(key).label("key"), cast(literal(revoked), BigInteger).label("revoked")).subquery()
            in_sql = connection.execute(select(policy.readable(principal, row.c, row.c.key, row.c.revoked))
                                        ).scalar_one()
            in_python = policy.can_read(principal, bucket, key, revoked)
            assert bool(in_sql) == in_python, (principal, bucket, key, revoked)
            allowed += in_python
    assert 0 < allowed < len(PRINCIPALS) * len(BUCKETS) * len(KEYS) * len(REVOCATIONS)


@pytest.mark.parametrize(("principal", "bucket", "revoked", "expected"), [
    (presigned("olivia", "private"), BUCKETS[1], None, True),
    (presigned("olivia", "private", key="another"), BUCKETS[1], None, False),  # one key only
    (presigned("olivia", "private", bucket_id=99), BUCKETS[1], None, False),  # the bucket was re-created
    (presigned("mallory", "private"), BUCKETS[1], None, False),  # the signer no longer owns it
    (presigned("root", "other", bucket_id=3, admin=True), BUCKETS[2], None, True),
    (presigned("olivia", "private"), BUCKETS[1], 2000, False),  # revoked after it was signed
    (presigned("olivia", "private"), BUCKETS[1], 500, True),  # a revocation before it was signed
])
def test_presigned_reads(principal: Principal, bucket: BucketFacts, revoked: int | None, expected: bool) -> None:
    assert AccessPolicy().can_read(principal, bucket, "obj", revoked) is expected
