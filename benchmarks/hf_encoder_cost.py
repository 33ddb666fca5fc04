"""What ``hf-encoder`` costs, measured offline (needs the hf extra; no download).

1. Cells per second of a tiny local encoder (2 layers, 32 wide, random weights, a WordPiece
   vocabulary trained on the data) through all five protocols on ddtp-sections en -> de,
   next to the bundled bag-of-embeddings model on the same spec in the same process: a line
   later changes to the plugin can be compared with.
2. ``--base``: the cost of an XLM-R-base-shaped encoder (12 layers, 768 wide, 250,002-token
   vocabulary; random weights: the values do not change the cost) on this machine's CPU: one
   training step (Adam, a batch of 16 texts of ``--length`` tokens) and prediction (texts/s),
   from which docs/pretrained.md works out what its example spec costs.

    python benchmarks/hf_encoder_cost.py [--base] [--length 48]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

SPEC = """name = "hf-cost"
dataset = {{ name = "ddtp-sections", options = {{ languages = ["en", "de"], max_per_lang = 600 }} }}
source = "en"
targets = ["de"]
shots = [8, 32]
seeds = [1, 2]
metrics = ["accuracy"]
executor = "local"
model = {model}
training = {{ epochs = 2, min_steps = 40 }}
[[methods]]
protocol = "target-only"
[[methods]]
protocol = "zero-shot"
[[methods]]
protocol = "transfer"
[[methods]]
protocol = "fusion"
[[methods]]
protocol = "joint"
"""


def run_spec(spec: Path, out: Path) -> tuple[float, int]:
    from click.testing import CliRunner

    from xleval.cli.main import build_cli

    started = time.perf_counter()
    result = CliRunner().invoke(build_cli(), ["run", str(spec), "--out", str(out), "-q"])
    seconds = time.perf_counter() - started
    if result.exit_code != 0:
        sys.exit(f"the run failed:\n{result.output}")
    import json

    cells = len(json.loads((out / "report.json").read_text())["cells"])
    return seconds, cells


def tiny(rounds: int) -> None:
    from xleval.plugin.manager import get_plugin_manager

    pm = get_plugin_manager()
    dataset = pm.registry.build(
        "datasets", "ddtp-sections", {"languages": ["en", "de"], "max_per_lang": 600}
    ).load()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        from xleval_plugins.hf_tiny import save_tiny_encoder

        encoder = save_tiny_encoder(root / "tiny", [e.text for e in dataset.examples])
        models = {
            "hf-encoder (tiny)": f'{{ name = "hf-encoder", options = {{ model = "{encoder}", '
            "max_length = 64, lr = 3e-3 } }",
            "bag-of-embeddings": '{ name = "bag-of-embeddings", options = { dim = 64 } }',
        }
        times: dict[str, list[float]] = {name: [] for name in models}
        cells = 0
        for r in range(rounds):
            for name, model in models.items():  # interleaved: the same load on both
                spec = root / f"{r}-{len(times[name])}.toml"
                spec.write_text(SPEC.format(model=model))
                seconds, cells = run_spec(spec, root / f"run-{r}-{name.split()[0]}")
                times[name].append(seconds)
                print(f"  round {r + 1}/{rounds} {name}: {seconds:.1f} s", flush=True)
        print(f"\n{cells} cells (5 protocols, de k=8/32, 2 seeds), medians of {rounds} rounds:")
        median = {name: statistics.median(t) for name, t in times.items()}
        for name, seconds in median.items():
            print(f"  {name:20s} {seconds:7.1f} s   {cells / seconds:6.2f} cells/s")
        ratio = median["hf-encoder (tiny)"] / median["bag-of-embeddings"]
        print(f"  tiny encoder / bag-of-embeddings time: {ratio:.1f}x")


def base(length: int, threads: int) -> None:
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    started = time.perf_counter()
    encoder = XLMRobertaModel(XLMRobertaConfig(vocab_size=250_002), add_pooling_layer=False)
    head = torch.nn.Linear(768, 7)
    print(f"XLM-R-base-shaped encoder built in {time.perf_counter() - started:.1f} s "
          f"({sum(p.numel() for p in encoder.parameters()) / 1e6:.0f} M parameters), "
          f"{threads} thread(s), texts of {length} tokens")  # fmt: skip
    ids = torch.randint(5, 250_000, (16, length))
    labels = torch.randint(0, 7, (16,))
    encoder.train()
    for frozen in (False, True):  # everything trained; the embeddings frozen
        encoder.embeddings.requires_grad_(not frozen)
        params = [p for p in [*encoder.parameters(), *head.parameters()] if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=3e-5)
        steps = []
        for _ in range(6):
            t = time.perf_counter()
            optimizer.zero_grad()
            hidden = encoder(input_ids=ids).last_hidden_state.mean(1)
            torch.nn.functional.cross_entropy(head(hidden), labels, reduction="sum").backward()
            optimizer.step()
            steps.append(time.perf_counter() - t)
        what = "freeze = 'embeddings'" if frozen else "freeze = 'none'"
        print(f"  training step (16 texts, Adam, {what}): {statistics.median(steps[1:]):.2f} s")
    encoder.eval()
    batch = torch.randint(5, 250_000, (64, length))
    calls = []
    with torch.inference_mode():
        for _ in range(4):
            t = time.perf_counter()
            encoder(input_ids=batch)
            calls.append(time.perf_counter() - t)
    per_text = statistics.median(calls[1:]) / 64
    print(f"  prediction: {1 / per_text:.0f} texts/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--base", action="store_true", help="also the XLM-R-base-shaped cost")
    parser.add_argument("--length", type=int, default=48, help="tokens a text (--base)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    tiny(args.rounds)
    if args.base:
        base(args.length, args.threads)


if __name__ == "__main__":
    main()
