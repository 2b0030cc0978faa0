"""Which MSs the measures data do not cover (logic only; real tables in tests/casa/test_measures.py)."""

from pclean_provider.casa.measures_info import MeasuresStatus, measures_warnings, mjd_to_date

STATUS = MeasuresStatus(path="/m", eop_measured_until_mjd=60889.0, eop_predicted_until_mjd=61029.0,
                        leap_seconds_table_date="2025-09-16", leap_seconds_table_mjd=60934.0)


def test_within_the_measures_says_nothing():
    assert measures_warnings(STATUS, 60389.0) == []
    assert measures_warnings(STATUS, None) == []


def test_after_the_predictions_end():
    [warning] = measures_warnings(STATUS, 61030.5)
    assert mjd_to_date(61029.0) in warning and "pclean measures update" in warning


def test_long_after_the_leap_second_table():
    warnings = measures_warnings(STATUS, 60934.0 + 200)
    assert any("leap-second table (2025-09-16)" in w for w in warnings)
