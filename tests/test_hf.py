"""The ``hf`` extra's plugins on real code paths, offline: a tiny randomly initialised BERT
and a WordPiece tokenizer trained on the test data with ``tokenizers``, saved with
``save_pretrained``; datasets saved with ``save_to_disk``, as parquet files, and as a
Hub-style directory of per-language configs. CI installs the extra: these tests must run
there (a missing extra fails them under CI=true instead of skipping)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import LABEL_WORDS, write_synthetic_dataset
from test_runner import METHODS, metrics_of

from xleval.cli.main import build_cli
from xleval.plugin.manager import get_plugin_manager
from xleval.report.build import read_report

pytestmark = pytest.mark.usefixtures("clean_plugin_env")

_MISSING = [
    name
    for name in ("transformers", "datasets", "tokenizers", "safetensors")
    if __import__("importlib.util").util.find_spec(name) is None
]
if _MISSING and os.environ.get("CI", "").lower() not in ("1", "true"):
    pytest.skip(f"the hf extra is not installed ({', '.join(_MISSING)})", allow_module_level=True)

LANGS = ("en", "de", "fr")


def rows(tmp: Path) -> list[dict]:
    path = write_synthetic_dataset(tmp / "syn.jsonl", groups_per_label=12)
    return [json.loads(line) for line in path.read_text().splitlines()]


def split_of(group: str) -> str:
    from xleval.api import split_for_group

    return {"dev": "validation"}.get(s := split_for_group(group, {"train": 0.6, "dev": 0.1,
                                                                   "test": 0.3}), s)  # fmt: skip


@pytest.fixture(scope="module")
def data_rows(tmp_path_factory) -> list[dict]:
    return rows(tmp_path_factory.mktemp("hf-rows"))


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory, data_rows) -> Path:
    """A 2-layer, 32-wide BERT with random weights and a WordPiece vocabulary of the data."""
    from xleval_plugins.hf_tiny import save_tiny_encoder

    directory = tmp_path_factory.mktemp("tiny-bert")
    return save_tiny_encoder(directory, [r["text"] for r in data_rows], vocab_size=300,
                             max_positions=64)  # fmt: skip


def hf_dataset(data_rows: list[dict]):
    import datasets

    datasets.disable_progress_bars()

    names = sorted(LABEL_WORDS)
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "group": datasets.Value("string"),
            "lang": datasets.Value("string"),
            "label": datasets.ClassLabel(names=names),
            "text": datasets.Value("string"),
        }
    )
    splits: dict[str, list[dict]] = {}
    for r in data_rows:
        row = {**r, "label": names.index(r["label"])}
        splits.setdefault(split_of(r["group"]), []).append(row)
    return datasets.DatasetDict(
        {s: datasets.Dataset.from_list(v, features=features) for s, v in sorted(splits.items())}
    )


@pytest.fixture(scope="module")
def saved_dataset(tmp_path_factory, data_rows) -> Path:
    directory = tmp_path_factory.mktemp("hf-saved") / "data"
    hf_dataset(data_rows).save_to_disk(str(directory))
    return directory


def write_spec(tmp: Path, dataset: str, encoder: Path, *, seeds=(1, 2)) -> Path:
    spec = tmp / "hf.toml"
    spec.write_text(
        f"""name = "hf"
dataset = {dataset}
source = "en"
targets = ["de"]
shots = [2, 4]
seeds = {list(seeds)}
metrics = ["accuracy", "nll"]
executor = "local"
model = {{ name = "hf-encoder", options = {{ model = "{encoder}", max_length = 32, lr = 3e-3 }} }}
training = {{ epochs = 2, min_steps = 60 }}
{METHODS}"""
    )
    return spec


def invoke(args: list[str]):
    from click.testing import CliRunner

    return CliRunner().invoke(build_cli(), args)


def test_every_protocol_runs_with_a_local_encoder_and_reruns_bit_identically(
    tmp_path, tiny_encoder, saved_dataset
):
    dataset = f'{{ name = "hf", options = {{ path = "{saved_dataset}", group_field = "group" }} }}'
    spec = write_spec(tmp_path, dataset, tiny_encoder)
    reports = []
    for out in ("a", "b"):
        result = invoke(["run", str(spec), "--out", str(tmp_path / out), "-q"])
        assert result.exit_code == 0, result.output
        reports.append(read_report(tmp_path / out / "report.json"))
    first, second = reports
    assert {c["method"] for c in first["cells"]} == {
        "target-only", "zero-shot", "transfer", "fusion", "joint"
    }  # fmt: skip
    assert all(c["status"] == "ok" for c in first["cells"]), [
        c.get("error") for c in first["cells"] if c["status"] != "ok"
    ]
    assert len(first["cells"]) == 5 * 2 * 2 - 2  # zero-shot has no shots: one per seed
    assert metrics_of(first) == metrics_of(second)
    # the source model learned the synthetic labels (a broken head or pooling would not)
    zero_shot_source = [c["source_metrics"] for c in first["cells"] if c["method"] == "zero-shot"]
    assert zero_shot_source and all(m["en"]["accuracy"] > 0.6 for m in zero_shot_source), (
        zero_shot_source
    )
    identity = first["environment"]["models"]["transfer"]
    assert identity["model"] == str(tiny_encoder) and identity["revision"] is None
    assert set(identity["files"]) >= {"config.json", "model.safetensors", "tokenizer.json"}
    assert all(h.startswith("sha256:") for h in identity["files"].values())


def test_changed_weights_recompute_the_cells(tmp_path, tiny_encoder, saved_dataset):
    """The weight files' hashes are in the cell keys: a run with other weights under the same
    path computes again instead of serving the old results."""
    import shutil

    from safetensors.torch import load_file, save_file

    encoder = Path(shutil.copytree(tiny_encoder, tmp_path / "encoder"))
    dataset = f'{{ name = "hf", options = {{ path = "{saved_dataset}", group_field = "group" }} }}'
    spec = write_spec(tmp_path, dataset, encoder, seeds=(1,))
    text = spec.read_text()
    spec.write_text(text[: text.index('[[methods]]\nprotocol = "zero-shot"')])  # target-only
    out = tmp_path / "run"
    assert invoke(["run", str(spec), "--out", str(out), "-q"]).exit_code == 0
    again = invoke(["run", str(spec), "--out", str(out), "-q"])
    assert read_report(out / "report.json")["run"]["cells_cached"] == 2, again.output
    weights = load_file(encoder / "model.safetensors")
    name = next(k for k in weights if "word_embeddings" in k)
    weights[name] = weights[name] * 2
    save_file(weights, encoder / "model.safetensors", metadata={"format": "pt"})
    changed = invoke(["run", str(spec), "--out", str(out), "-q"])
    assert changed.exit_code == 0, changed.output
    assert read_report(out / "report.json")["run"]["cells_computed"] == 2


def load(options: dict):
    pm = get_plugin_manager()
    return pm.registry.build("datasets", "hf", options).load()


def test_a_saved_dataset_keeps_its_rows_labels_and_splits(saved_dataset, data_rows):
    dataset = load({"path": str(saved_dataset), "group_field": "group", "id_field": "id"})
    assert dataset.labels == tuple(sorted(LABEL_WORDS))  # ClassLabel names, not ints
    assert dataset.languages == tuple(sorted(LANGS))
    by_id = {e.id: e for e in dataset.examples}
    assert len(by_id) == len(data_rows)
    for r in data_rows:
        e = by_id[r["id"]]
        assert (e.text, e.label, e.lang, e.group) == (r["text"], r["label"], r["lang"], r["group"])
        assert e.split == {"validation": "dev"}.get(split_of(r["group"]), split_of(r["group"]))
    assert dataset.metadata["split_origin"] == "file"


def test_parquet_files_and_per_language_configs(tmp_path, data_rows, saved_dataset):
    reference = load({"path": str(saved_dataset), "group_field": "group", "id_field": "id"})
    data = hf_dataset(data_rows)
    flat = tmp_path / "flat"
    flat.mkdir()
    for split, table in data.items():
        table.to_parquet(str(flat / f"{split}.parquet"))
    from_files = load(
        {"path": str(flat), "format": "parquet", "group_field": "group", "id_field": "id"}
    )
    # datasets' parquet files keep the ClassLabel in their metadata: the same names
    assert [(e.id, e.text, e.label, e.split) for e in from_files.examples] == [
        (e.id, e.text, e.label, e.split) for e in reference.examples
    ]

    hub = tmp_path / "hub"
    configs = []
    for lang in LANGS:
        files = []
        for split, table in data.items():
            part = table.filter(lambda r, lang=lang: r["lang"] == lang).remove_columns("lang")
            (hub / lang).mkdir(parents=True, exist_ok=True)
            part.to_parquet(str(hub / lang / f"{split}.parquet"))
            files.append(f"  - split: {split}\n    path: {lang}/{split}.parquet")
        configs.append(f"- config_name: {lang}-cfg\n  data_files:\n" + "\n".join(files))
    (hub / "README.md").write_text("---\nconfigs:\n" + "\n".join(configs) + "\n---\n")
    per_config = load(
        {
            "path": str(hub),
            "configs": {lang: f"{lang}-cfg" for lang in LANGS},
            "group_field": "group",
            "id_field": "id",
        }
    )
    assert per_config.languages == tuple(sorted(LANGS))
    assert [(e.id, e.lang, e.text, e.split) for e in per_config.examples] == [
        (e.id, e.lang, e.text, e.split) for e in reference.examples
    ]


def test_the_data_rules_apply_to_hf_datasets(tmp_path, data_rows):
    import datasets

    leaked = [dict(r) for r in data_rows[:8]]
    table = datasets.Dataset.from_list(leaked)
    datasets.DatasetDict({"train": table, "test": table.select([0])}).save_to_disk(
        str(tmp_path / "d")
    )
    result = invoke(
        ["datasets", "show", "hf", "-o", f"path={tmp_path / 'd'}", "-o", "group_field=group"]
    )
    assert result.exit_code != 0
    assert "must share a split" in result.output or "duplicate id" in result.output


def test_bad_hf_options_are_clear_errors(tmp_path, tiny_encoder, saved_dataset):
    pm = get_plugin_manager()
    with pytest.raises(Exception, match="pinned revision"):
        pm.registry.build("models", "hf-encoder", {"model": "some-org/some-model"})
    with pytest.raises(Exception, match="revision applies to Hub ids only"):
        pm.registry.build("models", "hf-encoder", {"model": str(tiny_encoder), "revision": "main"})
    with pytest.raises(Exception, match="pinned revision"):
        pm.registry.build("datasets", "hf", {"hub": "some-org/some-data"})
    with pytest.raises(Exception, match="exactly one of 'hub'"):
        pm.registry.build("datasets", "hf", {})
    with pytest.raises(Exception, match="'revision' applies to 'hub' datasets"):
        pm.registry.build("datasets", "hf", {"path": str(saved_dataset), "revision": "main"})
    not_a_dir = load_error({"path": str(tmp_path / "nothing-here")})
    assert "is not a directory" in not_a_dir
    missing_column = load_error({"path": str(saved_dataset), "text_field": "sentence"})
    assert "'sentence'" in missing_column and "text_field" in missing_column


def load_error(options: dict) -> str:
    from xleval.errors import XlevalError

    with pytest.raises(XlevalError) as caught:
        load(options)
    return str(caught.value)


def test_plugins_without_the_extra_are_listed_unavailable_with_the_install_command():
    script = (
        "import sys\n"
        "for name in ('transformers', 'datasets'):\n"
        "    sys.modules[name] = None  # as if not installed\n"
        "from xleval.cli.main import main\n"
        "main(sys.argv[1:])\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("XLEVAL_")}
    listed = subprocess.run(
        [sys.executable, "-c", script, "plugins"], capture_output=True, text=True, env=env
    )
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if line.startswith("xleval.hf"))
    assert "unavailable" in line and "pip install 'xleval[hf]'" in listed.stdout
    assert "xleval.models" in listed.stdout  # the rest is unchanged
    as_json = subprocess.run(
        [sys.executable, "-c", script, "plugins", "--json"], capture_output=True, text=True, env=env
    )
    records = json.loads(as_json.stdout)
    import jsonschema

    from xleval.experiment.resources import specs_dir

    schema = json.loads((specs_dir() / "plugins.schema.json").read_text())
    jsonschema.validate(records, schema)
    (hf,) = [r for r in records if r["name"] == "xleval.hf"]
    assert hf["status"] == "unavailable" and "pip install 'xleval[hf]'" in hf["error"]
    assert hf["error"].count("needs") == 1  # said once, though both of its hooks raise
    typo = subprocess.run(
        [sys.executable, "-c", script, "datasets", "show", "ddtp-sectons"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert "did you mean 'ddtp-sections'" in typo.stderr + typo.stdout
    assert "xleval.hf" not in typo.stderr + typo.stdout  # not quoted as a failed plugin
    assert hf["components"] == {"datasets": ["hf"], "models": ["hf-encoder"]}
    assert all(r["status"] == "ok" for r in records if r["name"] != "xleval.hf")
    used = subprocess.run(
        [sys.executable, "-c", script, "datasets", "show", "hf", "-o", "path=x"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert used.returncode != 0
    said = used.stdout + used.stderr
    assert "dataset 'hf' is unavailable: needs transformers, datasets" in said, said
    assert "pip install 'xleval[hf]'" in said and "Traceback" not in said


def test_token_ids_select_pad_concat_and_store():
    import numpy as np
    import torch
    from xleval_plugins.hf_encoder import TokenIds

    rows = [[2, 5, 3], [2, 3], [2, 7, 8, 9, 3]]
    lengths = torch.tensor([len(r) for r in rows])
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    batch = TokenIds(torch.tensor([i for r in rows for i in r]), offsets)
    picked = batch.select([2, 0])
    ids, mask = picked.padded(pad_id=0)
    assert ids.tolist() == [[2, 7, 8, 9, 3], [2, 5, 3, 0, 0]]
    assert mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    joined = TokenIds.concat([picked, batch.select([1])])
    assert joined.padded(0)[0].tolist()[2] == [2, 3, 0, 0, 0]
    again = TokenIds.from_arrays({k: np.array(v) for k, v in batch.to_arrays().items()})
    assert torch.equal(again.ids, batch.ids) and torch.equal(again.offsets, batch.offsets)


def build(tiny_encoder: Path, n_classes: int = 4, seed: int = 0, **options):
    from xleval.train.trainer import build_model

    pm = get_plugin_manager()
    builder = pm.registry.build("models", "hf-encoder", {"model": str(tiny_encoder), **options})
    return build_model(builder, n_classes, seed=seed)


def train_a_little(model, data_rows, **options):
    from xleval.train.trainer import train

    texts = [r["text"] for r in data_rows if r["lang"] == "en"]
    names = sorted(LABEL_WORDS)
    labels = [names.index(r["label"]) for r in data_rows if r["lang"] == "en"]
    return train(model, texts, labels, {"epochs": 1, "min_steps": 0, **options}, seed=0)


@pytest.mark.parametrize(
    ("freeze", "frozen", "trained"),
    [
        ("encoder", ["encoder."], ["classifier."]),
        ("embeddings", ["encoder.embeddings."], ["encoder.encoder.layer.0.", "classifier."]),
        (1, ["encoder.embeddings.", "encoder.encoder.layer.0."], ["encoder.encoder.layer.1."]),
        ("none", [], ["encoder.embeddings.word", "encoder.encoder.layer.0.", "classifier."]),
    ],
)
def test_freeze_keeps_exactly_those_weights(tiny_encoder, data_rows, freeze, frozen, trained):
    import torch

    model = build(tiny_encoder, freeze=freeze)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = train_a_little(model, data_rows)
    assert (report.optimizer, report.lr, report.batch_size) == ("adam", 3e-5, 16)  # its own
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    for prefix in frozen:
        assert not {k for k in changed if k.startswith(prefix)}, (freeze, prefix)
    for prefix in trained:
        assert {k for k in changed if k.startswith(prefix)}, (freeze, prefix)


def test_pooling_truncation_and_length_bucketed_prediction_agree(tiny_encoder, data_rows):
    import torch

    from xleval.train.trainer import predict_scores

    texts = [r["text"] for r in data_rows[:40]] + ["puzzle " * 100]  # one over max_length
    for pooling in ("mean", "cls"):
        model = build(tiny_encoder, pooling=pooling, max_length=16, eval_batch_size=7)
        features = model.featurize(texts)
        assert int(features.lengths.max()) == 16  # truncated, special tokens included
        bucketed = predict_scores(model, texts, features=features)
        model.eval()  # no dropout
        with torch.no_grad():  # one text at a time, no padding: what bucketing must equal
            alone = torch.cat([model._scores(features.select([i])) for i in range(len(texts))])
        assert torch.allclose(bucketed, alone, atol=1e-5), pooling
    cls_model, mean_model = (build(tiny_encoder, pooling=p) for p in ("cls", "mean"))
    one = cls_model.featurize(texts[:3])
    assert not torch.allclose(cls_model._scores(one), mean_model._scores(one))


def test_the_same_seed_builds_the_same_head_and_another_does_not(tiny_encoder):
    import torch

    a, b, c = build(tiny_encoder, seed=1), build(tiny_encoder, seed=1), build(tiny_encoder, seed=2)
    assert torch.equal(a.classifier.weight, b.classifier.weight)
    assert not torch.equal(a.classifier.weight, c.classifier.weight)
    # each model has its own copy of the encoder: training one leaves the others alone
    a.encoder.get_input_embeddings().weight.data.add_(1.0)
    assert not torch.equal(a.encoder.get_input_embeddings().weight, b.embedding.weight)


def test_plain_labels_pooled_splits_and_ignored_splits(tmp_path, data_rows):
    import datasets

    plain = [{**r, "label": sorted(LABEL_WORDS).index(r["label"])} for r in data_rows]
    table = datasets.Dataset.from_list(plain)  # integer labels, no ClassLabel
    even = [i for i, r in enumerate(plain) if int(r["group"].split("-")[1]) % 2 == 0]
    odd = sorted(set(range(len(plain))) - set(even))  # whole groups, every label in both
    half = len(even)
    datasets.DatasetDict({"train": table.select(even), "extra": table.select(odd)}).save_to_disk(
        str(tmp_path / "d")
    )
    base = {"path": str(tmp_path / "d"), "group_field": "group", "id_field": "id"}
    kept = load(base)  # 'extra' is not a split name it knows: not loaded, and said so
    assert len(kept.examples) == half and kept.metadata["ignored_splits"] == ["extra"]
    assert {e.label for e in kept.examples} <= {"0", "1", "2", "3"}
    mapped = load({**base, "splits": {"train": "train", "extra": "test"}})
    assert len(mapped.examples) == len(plain) and "ignored_splits" not in mapped.metadata
    assert {e.split for e in mapped.examples} == {"train", "test"}
    pooled = load({**base, "splits": None})  # every split, split by group hash
    assert len(pooled.examples) == len(plain)
    assert pooled.metadata["split_origin"] == "group hash"
    assert {e.split for e in pooled.examples} == {"train", "dev", "test"}
    groups: dict[str, set[str]] = {}
    for e in pooled.examples:
        groups.setdefault(e.group, set()).add(e.split)
    assert all(len(s) == 1 for s in groups.values())  # translations share a split


def test_a_bfloat16_encoder_predicts_finite_float32_scores(tiny_encoder, data_rows):
    import torch

    from xleval.train.trainer import predict_scores

    model = build(tiny_encoder, dtype="bfloat16")
    assert next(model.encoder.parameters()).dtype == torch.bfloat16
    assert model.classifier.weight.dtype == torch.float32
    scores = predict_scores(model, [r["text"] for r in data_rows[:10]])
    assert scores.dtype == torch.float32 and scores.shape == (10, 4)
    assert torch.isfinite(scores).all()


def test_a_split_column_decides_the_splits(tmp_path, data_rows):
    import datasets

    with_column = [{**r, "part": split_of(r["group"])} for r in data_rows]  # validation: dev
    datasets.Dataset.from_list(with_column).save_to_disk(str(tmp_path / "d"))
    base = {"path": str(tmp_path / "d"), "group_field": "group", "id_field": "id"}
    loaded = load({**base, "split_field": "part"})
    expected = {r["id"]: {"validation": "dev"}.get(r["part"], r["part"]) for r in with_column}
    assert {e.id: e.split for e in loaded.examples} == expected
    assert loaded.metadata["split_origin"] == "file"
    unknown = load_error({**base, "split_field": "part", "splits": {"train": "train"}})
    assert "unknown split 'validation'" in unknown
    missing = load_error({**base, "split_field": "nope"})
    assert "no column 'nope' for the split field" in missing


def test_a_saved_and_reloaded_model_scores_as_before(tiny_encoder, data_rows, monkeypatch):
    """The artifact store saves shared source models with torch.save and loads them onto the
    CPU; the model must come back on its own device and predict exactly as before."""
    import io

    import torch

    from xleval.train.trainer import predict_scores

    model = build(tiny_encoder)
    train_a_little(model, data_rows)
    texts = [r["text"] for r in data_rows[:12]]
    before = predict_scores(model, texts)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    again = torch.load(buffer, map_location="cpu", weights_only=False)
    assert torch.equal(predict_scores(again, texts), before)
    model.device_name = "cuda:7"  # as if built for a GPU: it must move back there
    saved = io.BytesIO()
    torch.save(model, saved)
    saved.seek(0)
    moved: list[tuple[str, Any]] = []
    monkeypatch.setattr(
        torch.nn.Module, "to", lambda self, *a, **k: moved.append((type(self).__name__, a)) or self
    )
    torch.load(saved, map_location="cpu", weights_only=False)
    assert {(name, args) for name, args in moved} >= {("Linear", ("cuda:7",))}
    assert any(args == ("cuda:7",) and name != "Linear" for name, args in moved)


def test_the_encoders_training_defaults_fill_only_what_the_spec_leaves_unset():
    from xleval.train.trainer import resolve_training_options, with_model_defaults

    own = {"optimizer": "adam", "lr": 3e-5, "batch_size": 16, "threads": 2}
    unset = with_model_defaults(resolve_training_options({"epochs": 3}), own)
    assert (unset["optimizer"], unset["lr"], unset["batch_size"], unset["epochs"]) == (
        "adam", 3e-5, 16, 3
    )  # fmt: skip
    finetune = with_model_defaults(resolve_training_options({"lr": 1e-5}), own)
    assert (finetune["optimizer"], finetune["lr"]) == ("adam", 1e-5)  # the spec's rate kept
    sgd = with_model_defaults(resolve_training_options({"optimizer": "sgd", "batch_size": 8}), own)
    assert (sgd["optimizer"], sgd["lr"], sgd["batch_size"]) == ("sgd", 3e-5, 8)


def test_an_unlabelled_classlabel_row_is_refused_with_its_place(tmp_path, data_rows):
    data = hf_dataset(data_rows)
    train = data["train"]
    unlabelled = train.map(
        lambda row, i: {"label": -1 if i == 3 else row["label"]}, with_indices=True
    )
    data["train"] = unlabelled
    data.save_to_disk(str(tmp_path / "d"))
    message = load_error({"path": str(tmp_path / "d"), "group_field": "group", "id_field": "id"})
    before = sum(len(data[name]) for name in list(data)[: list(data).index("train")])
    assert f"{tmp_path / 'd'}:{before + 4}: " in message and "label" in message, message
