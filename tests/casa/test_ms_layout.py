"""casa.ms_layout: a copy of an MS with tiles of a few channels holds exactly the original's rows,
columns, keywords and subtables; what cannot be copied row by row is refused by name."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.run_cache import simulated

pytestmark = pytest.mark.casa


@pytest.fixture(scope="module")
def two_spw_ms(casa_runtime):
    return simulated("layout", nchan=8, nspw=2, antennas=5, hours=0.25, integration_s=60, seed=31).ms


def _managers(path):
    from casatools import table

    tb = table()
    tb.open(path)
    try:
        return {str(c): (v["TYPE"], v) for v in tb.getdminfo().values() for c in v["COLUMNS"]}
    finally:
        tb.close()


def test_copy_holds_the_same_values_with_channel_tiles(two_spw_ms, tmp_path):
    from casatools import table

    from pclean_provider.casa.ms_layout import write_layout_copy

    dest = tmp_path / "copy.ms"
    copy = write_layout_copy(two_spw_ms, str(dest), channels_per_tile=2)
    assert copy.path == str(dest) and set(copy.spectral_columns) >= {"DATA", "FLAG"}
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]  # staged, then renamed into place
    a, b = table(), table()
    a.open(two_spw_ms)
    b.open(str(dest))
    try:
        assert a.nrows() == b.nrows() > 0 and sorted(a.colnames()) == sorted(b.colnames())
        for column in a.colnames():
            if a.iscelldefined(column, 0):
                assert np.array_equal(a.getcol(column), b.getcol(column)), column
            assert repr(a.getcolkeywords(column)) == repr(b.getcolkeywords(column)), column  # arrays inside
        assert a.info() == b.info()
        keywords = b.getkeywords()
        for name, value in a.getkeywords().items():
            if isinstance(value, str) and value.startswith("Table: "):
                # Each subtable is inside the copy, with the same rows.
                assert keywords[name] == f"Table: {dest}/{name}", (name, keywords[name])
                sa, sb = table(), table()
                sa.open(value[len("Table: "):])
                sb.open(str(dest / name))
                assert sa.nrows() == sb.nrows() and sorted(sa.colnames()) == sorted(sb.colnames()), name
                sa.close()
                sb.close()
            else:
                assert keywords[name] == value, name
    finally:
        a.close()
        b.close()
    managers = _managers(str(dest))
    kind, data = managers["DATA"]
    assert kind == "TiledShapeStMan"
    # One hypercube per spw shape; every tile holds 2 channels of all correlations.
    assert {int(h["TileShape"][1]) for h in data["SPEC"]["HYPERCUBES"].values()} == {2}
    for column in ("UVW", "TIME", "TIME_CENTROID"):
        assert managers[column][0] == "StandardStMan", (column, managers[column][0])
    # No incremental manager is shared by two columns (its one-bucket cache re-reads every bucket
    # for each column the visibility iterator reads).
    incremental = [v["NAME"] for kind, v in managers.values() if kind == "IncrementalStMan"]
    assert len(incremental) == len(set(incremental))


def test_a_reference_table_is_refused_by_name(two_spw_ms, tmp_path):
    from casatools import table

    from pclean_provider.casa.ms_layout import MsLayoutError, write_layout_copy

    tb = table()
    tb.open(two_spw_ms)
    selection = tb.query("DATA_DESC_ID==0", name=str(tmp_path / "selection.ms"))
    selection.close()
    tb.close()
    with pytest.raises(MsLayoutError, match="selection.ms is not a plain table"):
        write_layout_copy(str(tmp_path / "selection.ms"), str(tmp_path / "copy.ms"))
    assert not (tmp_path / "copy.ms").exists()
