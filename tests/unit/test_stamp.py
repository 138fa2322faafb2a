import pytest

from hooks import stamp


def test_stamp_is_utc_basic_iso8601():
    assert stamp.make_stamp(0) == "19700101T000000Z"
    assert stamp.make_stamp(1700000000) == "20231114T221320Z"


def test_now_is_a_stamp():
    assert stamp.is_stamp(stamp.make_stamp())


@pytest.mark.parametrize("text", ["20231114T221320", "2023-11-14T22:13:20Z", "", "20231114T221320Zx"])
def test_not_stamps(text):
    assert not stamp.is_stamp(text)


def test_source_date_epoch_is_honoured():
    assert stamp.stamp_from_environment({"SOURCE_DATE_EPOCH": "1700000000"}) == "20231114T221320Z"


def test_bad_source_date_epoch_is_named():
    with pytest.raises(ValueError, match="SOURCE_DATE_EPOCH='yesterday'"):
        stamp.stamp_from_environment({"SOURCE_DATE_EPOCH": "yesterday"})
