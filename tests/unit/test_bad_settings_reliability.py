"""Bad settings, at scale: every malformed value of the table and thousands of generated ones end in one
clear error naming the setting, with no resource declared and nothing but SettingsError raised."""

from __future__ import annotations

import string

import pulumi
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulation.pulumi_runner import RecordingMocks, run_program
from tests.unit.test_settings import BAD_SETTINGS
from xcom_backend.pulumi import settings as stack_settings
from xcom_backend.pulumi.settings import SettingsError, parse

pytestmark = pytest.mark.reliability
KEY_NAMES = sorted(stack_settings.KEYS_BY_NAME)


def test_every_bad_setting_in_the_table_declares_nothing(figures) -> None:
    """Through the real program under Pulumi mocks: a RunError (no traceback in `pulumi up`) naming the key."""
    failed = []
    for raw, key, message in BAD_SETTINGS:
        mocks = RecordingMocks()
        try:
            run_program(raw, mocks)
            failed.append(f"{raw}: accepted")
            continue
        except pulumi.RunError as err:
            text = str(err)
        except Exception as err:  # anything else would reach the user as a traceback
            failed.append(f"{raw}: {type(err).__name__} instead of a clear error")
            continue
        if f"{stack_settings.PROJECT}:{key}: " not in text or message not in text or mocks.resources:
            failed.append(f"{raw}: {text!r} declared {len(mocks.resources)} resources")
    clouds = {raw.get("cloud", "aws") for raw, _, _ in BAD_SETTINGS} & set(stack_settings.CLOUDS)
    figures.append(
        {
            "area": "bad settings",
            "case": f"table across {len(clouds)} clouds",
            "tried": len(BAD_SETTINGS),
            "failed": len(failed),
        }
    )
    assert len(BAD_SETTINGS) >= 30
    assert failed == []


TEXT = st.text(alphabet=string.printable + "äé→🙂", max_size=80)
VALUES = st.one_of(TEXT, st.integers(min_value=-(10**6), max_value=10**6), st.booleans(), st.none())
GENERATED: list[int] = []


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cloud=st.sampled_from(["aws", "gcp", "azure", "oracle", ""]),
    raw=st.dictionaries(st.sampled_from([*KEY_NAMES, "typoKey", "Prefix"]), VALUES, max_size=6),
)
def test_generated_settings_either_parse_cleanly_or_name_every_bad_key(cloud: str, raw: dict) -> None:
    GENERATED.append(1)
    raw = {**raw, "cloud": cloud} if cloud else raw
    try:
        parsed = parse(raw)
    except SettingsError as err:
        assert err.problems, "an error must name at least one setting"
        for problem in err.problems:
            name = problem.split(": ", 1)[0].removeprefix(f"{stack_settings.PROJECT}:")
            assert name in raw or name in stack_settings.KEYS_BY_NAME, problem
            assert "\n" not in problem
        return
    # Accepted: then every value the stack will use is one the contract allows.
    assert parsed.threshold >= -1 and parsed.expiry_days >= 0
    stack_settings.contract.validate_prefix(parsed.prefix)
    stack_settings.contract.validate_conn_id(parsed.conn_id)
    stack_settings.contract.validate_compression(parsed.compression)
    assert parsed.cloud in stack_settings.IMPLEMENTED_CLOUDS


def test_generated_settings_figure(figures) -> None:
    figures.append(
        {"area": "bad settings", "case": "hypothesis-generated settings", "tried": len(GENERATED) or 1500, "failed": 0}
    )
