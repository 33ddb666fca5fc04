"""The run directory's cell store: what ``save`` writes is what ``load`` accepts, and the
file is the canonical JSON of its envelope (so a checksum tool, or a reader in another
language, can recompute the sha256 from the result alone)."""

from __future__ import annotations

import hashlib
import json

from xleval.api.files import canonical_json
from xleval.run.store import CellStore

RESULT = {
    "cell": {"method": "zero-shot", "sources": ["en"], "target": "dé", "shots": 0, "seed": 1},
    "status": "ok",
    "metrics": {"accuracy": 0.625, "nll": 1.0000000000000002},
    "source_metrics": {},
    "predictions": {"de": {"ids": ["b", "a"], "probs_f32": "AAAAPw=="}},
}


def test_saved_file_is_the_canonical_envelope_and_loads_back(tmp_path):
    store = CellStore(tmp_path)
    store.save("k1", RESULT)
    text = store.path("k1").read_text(encoding="utf-8")
    digest = hashlib.sha256(canonical_json(RESULT).encode()).hexdigest()
    assert text == canonical_json({"key": "k1", "sha256": digest, "result": RESULT})
    assert CellStore(tmp_path).load("k1") == RESULT


def test_a_changed_result_or_key_is_refused(tmp_path):
    store = CellStore(tmp_path)
    store.save("k1", RESULT)
    envelope = json.loads(store.path("k1").read_text(encoding="utf-8"))
    envelope["result"]["metrics"]["accuracy"] = 0.75
    store.path("k1").write_text(json.dumps(envelope), encoding="utf-8")
    store.save("k2", RESULT)
    store.path("k2").rename(store.path("k3"))  # the file names a key it was not saved under
    fresh = CellStore(tmp_path)
    assert fresh.load("k1") is None and fresh.load("k3") is None
    assert len(fresh.corrupt) == 2
