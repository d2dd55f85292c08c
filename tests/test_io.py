import json
import math

import numpy as np
import pandas as pd

from monosemantic.io import atomic_parquet, json_safe, safe_name


def test_json_safe_equals_a_json_round_trip_and_is_strict():
    o = {"cfg": {"betas": (0.9, 0.99), "n": np.int64(3), "x": np.float32(0.5), "ok": np.bool_(True)},
         "arr": np.arange(3), 7: "int key", "nan": float("nan"), "inf": np.float64(np.inf), "none": None}
    out = json_safe(o)
    text = json.dumps(out, allow_nan=False)  # strict JSON: would raise on NaN/inf
    assert json.loads(text) == out
    assert out["cfg"] == {"betas": [0.9, 0.99], "n": 3, "x": 0.5, "ok": True}
    assert out["arr"] == [0, 1, 2] and out["7"] == "int key"
    assert out["nan"] is None and out["inf"] is None and out["none"] is None
    assert type(out["cfg"]["n"]) is int and type(out["cfg"]["ok"]) is bool
    assert math.isfinite(out["cfg"]["x"])


def test_atomic_parquet_writes_and_leaves_no_temporary(tmp_path):
    df = pd.DataFrame({"a": [1, 2], "b": [0.5, 1.5]})
    atomic_parquet(df, tmp_path / "sub" / "t.parquet")
    assert pd.read_parquet(tmp_path / "sub" / "t.parquet").equals(df)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["t.parquet"]


def test_safe_name_makes_one_path_component():
    assert safe_name("A/1") == "A-1" and safe_name("A/neurons") == "A-neurons" and safe_name("x_y.z") == "x_y.z"
