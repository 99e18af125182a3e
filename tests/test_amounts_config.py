"""Exact decimal <-> integer conversion (protocol.amounts) and config loading (protocol.config)."""

from __future__ import annotations

import tomllib
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.amounts import (
    AmountError,
    Step,
    format_decimal,
    from_steps,
    parse_decimal,
    ratio_ppm,
    to_steps,
)
from protocol.config import DEFAULT_CONFIG, MAX_INT, ConfigError, load, loads

# ------------------------------------------------------------------------------ amounts


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", (0, 0)),
        ("12", (12, 0)),
        ("12.340", (12340, 3)),
        ("0.00000001", (1, 8)),
        ("-1.5", (-15, 1)),
        ("+2.25", (225, 2)),
        (".5", (5, 1)),
        ("7.", (7, 0)),
        ("000123.4500", (1234500, 4)),
    ],
)
def test_parse_decimal_gives_exact_mantissa_and_places(text: str, expected: tuple) -> None:
    assert parse_decimal(text) == expected


@pytest.mark.parametrize("value", [0.1, 1.0, 1e-8, 3, Decimal("1.5"), None, b"1.5", ["1"]])
def test_parse_decimal_rejects_anything_but_a_string(value: object) -> None:
    with pytest.raises(AmountError, match="expected a decimal string"):
        parse_decimal(value)


def test_to_steps_rejects_a_float_even_when_it_looks_exact() -> None:
    with pytest.raises(AmountError):
        to_steps(0.5, Step("0.01"))


@pytest.mark.parametrize(
    "text",
    [
        "",
        ".",
        "-",
        "+",
        "1e5",
        "1E-2",
        "1.5e3",
        "abc",
        "1.2.3",
        " 1",
        "1 ",
        "1,5",
        "0x10",
        "inf",
        "nan",
        "--1",
        "1_000",
        "½",
    ],
)
def test_parse_decimal_rejects_exponents_and_junk(text: str) -> None:
    with pytest.raises(AmountError):
        parse_decimal(text)


def test_parse_decimal_rejects_more_than_38_digits() -> None:
    assert parse_decimal("9" * 38) == (int("9" * 38), 0)
    with pytest.raises(AmountError, match="too many digits"):
        parse_decimal("9" * 39)
    with pytest.raises(AmountError, match="too many digits"):
        parse_decimal("1." + "0" * 38)


@pytest.mark.parametrize(
    ("text", "step", "expected"),
    [
        ("1.23", "0.01", 123),
        ("1.230000", "0.01", 123),
        ("100", "0.01", 10000),
        ("0.0001", "0.0001", 1),
        ("1.25", "0.25", 5),
        ("30", "10", 3),
        ("0", "0.5", 0),
        ("-1.00", "0.01", -100),
    ],
)
def test_to_steps_counts_whole_steps_exactly(text: str, step: str, expected: int) -> None:
    assert to_steps(text, Step(step)) == expected


@pytest.mark.parametrize(
    ("text", "step"),
    [("1.005", "0.01"), ("0.3", "0.25"), ("15", "10"), ("0.00000001", "0.0001")],
)
def test_to_steps_rejects_off_step_values_naming_the_step(text: str, step: str) -> None:
    with pytest.raises(AmountError) as err:
        to_steps(text, Step(step), "price")
    message = str(err.value)
    assert "price" in message
    assert Step(step).text in message
    assert text in message


@pytest.mark.parametrize("text", ["0", "-0.01", "0.000", "abc", "1e-2"])
def test_step_must_be_a_positive_decimal(text: str) -> None:
    with pytest.raises(AmountError):
        Step(text)


@pytest.mark.parametrize(
    ("count", "step", "expected"),
    [
        (123, "0.01", "1.23"),
        (0, "0.01", "0.00"),
        (-5, "0.01", "-0.05"),
        (5, "0.25", "1.25"),
        (3, "10", "30"),
        (1, "0.00000001", "0.00000001"),
    ],
)
def test_from_steps_writes_the_steps_places(count: int, step: str, expected: str) -> None:
    assert from_steps(count, Step(step)) == expected


def test_format_decimal_pads_small_values() -> None:
    assert format_decimal(1, 8) == "0.00000001"
    assert format_decimal(12340, 3) == "12.340"
    assert format_decimal(7, -2) == "700"


def test_ratio_ppm_is_exact_and_rejects_finer_rates() -> None:
    assert ratio_ppm("0.001") == 1000
    assert ratio_ppm("0.0025") == 2500
    assert ratio_ppm("0") == 0
    with pytest.raises(AmountError, match="0.000001"):
        ratio_ppm("0.0000001")


steps = st.sampled_from(["0.01", "0.0001", "0.25", "5", "0.00000001", "0.5", "10"])


@settings(max_examples=200, deadline=None)
@given(count=st.integers(-(10**20), 10**20), step=steps)
def test_from_steps_then_to_steps_round_trips(count: int, step: str) -> None:
    s = Step(step)
    text = from_steps(count, s)
    assert Decimal(text) == count * Decimal(step)
    assert to_steps(text, s) == count


@settings(max_examples=200, deadline=None)
@given(
    whole=st.integers(0, 10**12),
    frac=st.text(alphabet="0123456789", max_size=10),
    step=steps,
)
def test_to_steps_agrees_with_exact_rational_division(whole: int, frac: str, step: str) -> None:
    text = f"{whole}.{frac}" if frac else str(whole)
    ratio = Fraction(Decimal(text)) / Fraction(Decimal(step))
    if ratio.denominator == 1:
        assert to_steps(text, Step(step)) == ratio.numerator
    else:
        with pytest.raises(AmountError, match="multiple of"):
            to_steps(text, Step(step))


# ------------------------------------------------------------------------------- config


def _scaled(text: str, decimals: int) -> int:
    value = Decimal(text).scaleb(decimals)
    assert value == value.to_integral_value()
    return int(value)


def test_default_config_loads_with_scales_computed_exactly() -> None:
    raw = tomllib.loads(DEFAULT_CONFIG.read_text())
    ex = load()
    assert ex.assets == {name: a["decimals"] for name, a in raw["assets"].items()}
    assert set(ex.markets) == set(raw["markets"]) == {"BTC-USD", "ETH-USD", "ETH-BTC"}
    assert ex.engine.fee_account == raw["engine"]["fee_account"]
    for symbol, m in raw["markets"].items():
        spec = ex.markets[symbol]
        base_dec, quote_dec = (
            raw["assets"][m["base"]]["decimals"],
            raw["assets"][m["quote"]]["decimals"],
        )
        tick, lot = Decimal(m["tick"]), Decimal(m["lot"])
        assert (spec.base, spec.quote) == (m["base"], m["quote"])
        assert spec.lot_units == _scaled(m["lot"], base_dec)
        assert spec.tick_lot_quote == _scaled(str(tick * lot), quote_dec)
        assert spec.min_qty == Decimal(m["min_qty"]) / lot
        assert spec.max_qty == Decimal(m["max_qty"]) / lot
        assert spec.max_price == Decimal(m["max_price"]) / tick
        assert spec.maker_ppm == _scaled(m["maker_fee"], 6)
        assert spec.taker_ppm == _scaled(m["taker_fee"], 6)


def test_market_spec_converts_human_prices_and_quantities() -> None:
    spec = load().markets["BTC-USD"]
    assert spec.price_to_ticks("65000.25") == 6500025
    assert spec.qty_to_lots("0.5") == 5000
    assert spec.price_text(6500025) == "65000.25"
    assert spec.qty_text(5000) == "0.5000"
    assert spec.quote_to_units("1.5") == 1_500_000
    with pytest.raises(AmountError, match="price must be a multiple of 0.01, was 1.005"):
        spec.price_to_ticks("1.005")
    with pytest.raises(AmountError, match="quantity must be a multiple of 0.0001"):
        spec.qty_to_lots("0.00005")
    with pytest.raises(AmountError):
        spec.price_to_ticks(1.5)


def test_exchange_converts_asset_amounts() -> None:
    ex = load()
    assert ex.amount_to_units("BTC", "1.00000001") == 100_000_001
    assert ex.units_text("USD", 1_500_000) == "1.500000"
    with pytest.raises(AmountError, match="BTC amount"):
        ex.amount_to_units("BTC", "0.000000001")


GOOD = """
[assets.BTC]
decimals = 8

[assets.USD]
decimals = 2

[markets.BTC-USD]
base = "BTC"
quote = "USD"
tick = "1"
lot = "0.01"
min_qty = "0.01"
max_qty = "100"
max_price = "1000000"
maker_fee = "0.001"
taker_fee = "0.002"
"""


def test_a_minimal_custom_config_loads() -> None:
    ex = loads(GOOD)
    spec = ex.markets["BTC-USD"]
    assert spec.tick_lot_quote == 1  # 1 USD x 0.01 BTC = 0.01 USD = 1 cent
    assert spec.lot_units == 1_000_000
    assert (spec.min_qty, spec.max_qty, spec.max_price) == (1, 10_000, 1_000_000)


@pytest.mark.parametrize(
    ("old", "new", "names"),
    [
        ('base = "BTC"', 'base = "XBT"', ["markets.BTC-USD.base", "unknown asset", "XBT"]),
        ('quote = "USD"', 'quote = "EUR"', ["markets.BTC-USD.quote", "EUR"]),
        ('tick = "1"', 'tick = "0.1"', ["markets.BTC-USD", "tick 0.1", "USD", "2 decimals"]),
        ('lot = "0.01"', 'lot = "0.000000001"', ["markets.BTC-USD.lot", "BTC", "8 decimals"]),
        ('min_qty = "0.01"', 'min_qty = "0.015"', ["markets.BTC-USD.min_qty", "0.01"]),
        ('max_price = "1000000"', 'max_price = "10.5"', ["markets.BTC-USD.max_price"]),
        ('min_qty = "0.01"', 'min_qty = "1000"', ["markets.BTC-USD", "min_qty <= max_qty"]),
        ('taker_fee = "0.002"', 'taker_fee = "1"', ["markets.BTC-USD.taker_fee"]),
        ('maker_fee = "0.001"', 'maker_fee = "0.0000001"', ["markets.BTC-USD.maker_fee"]),
        ('tick = "1"', 'tick = "0"', ["markets.BTC-USD.tick", "positive"]),
        ('tick = "1"', 'tick = "1e-2"', ["markets.BTC-USD.tick"]),
        ('quote = "USD"', 'quote = "BTC"', ["markets.BTC-USD", "differ"]),
        ("decimals = 2", "decimals = 19", ["assets.USD.decimals", "19"]),
        ('max_qty = "100"', 'max_qty = "100000000000"', ["markets.BTC-USD", "overflow"]),
        ("decimals = 8", 'decimals = "8"', ["decimals", "int"]),
        ('tick = "1"', "tick = 1", ["tick", "str"]),
        ('lot = "0.01"', 'lot = "0.01"\ncolour = "red"', ["colour", "unknown field"]),
        ("decimals = 8", "decimals = 8\nsymbol = 'x'", ["symbol", "unknown field"]),
    ],
)
def test_bad_config_fails_naming_the_field(old: str, new: str, names: list[str]) -> None:
    assert old in GOOD
    with pytest.raises(ConfigError) as err:
        loads(GOOD.replace(old, new, 1))
    for name in names:
        assert name in str(err.value)


def test_config_missing_a_required_field_fails_naming_it() -> None:
    with pytest.raises(ConfigError, match="max_price"):
        loads(GOOD.replace('max_price = "1000000"\n', ""))


def test_config_with_bad_engine_settings_fails() -> None:
    with pytest.raises(ConfigError, match="engine.fsync"):
        loads(GOOD + '\n[engine]\nfsync = "sometimes"\n')
    with pytest.raises(ConfigError, match="unknown field `colour`"):
        loads(GOOD + '\n[engine]\ncolour = "red"\n')
    with pytest.raises(ConfigError, match="batch_max"):
        loads(GOOD + "\n[engine]\nbatch_max = 0\n")
    for name in ("closed_orders_kept", "fills_kept", "recent_trades_kept"):
        with pytest.raises(ConfigError, match=f"engine.{name}: must be at least 1"):
            loads(GOOD + f"\n[engine]\n{name} = 0\n")


def test_config_that_is_not_toml_fails() -> None:
    with pytest.raises(ConfigError):
        loads("[assets\n")


def test_load_names_the_file_when_it_is_bad(tmp_path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(GOOD.replace("decimals = 8", 'decimals = "eight"'))
    with pytest.raises(ConfigError) as err:
        load(path)
    assert str(path) in str(err.value)
    assert "decimals" in str(err.value)
    with pytest.raises(ConfigError, match="missing.toml"):
        load(tmp_path / "missing.toml")


def test_load_reads_the_config_named_by_the_environment(tmp_path, monkeypatch) -> None:
    path = tmp_path / "custom.toml"
    path.write_text(GOOD)
    monkeypatch.setenv("EXCHANGE_CONFIG", str(path))
    assert set(load().markets) == {"BTC-USD"}


def test_max_int_is_the_64_bit_signed_limit() -> None:
    assert MAX_INT == 9223372036854775807


def test_non_ascii_digits_are_rejected() -> None:
    from protocol.amounts import AmountError, parse_decimal

    for text in ("١٢", "１２.５", "12.٥"):
        with pytest.raises(AmountError):
            parse_decimal(text)
