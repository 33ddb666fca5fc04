"""A tiny randomly initialised encoder for offline checks of ``hf-encoder`` specs.

:func:`save_tiny_encoder` trains a WordPiece tokenizer on your texts with ``tokenizers`` and
saves it with a 2-layer BERT of random weights in a directory that ``hf-encoder``'s
``model`` option can name: every protocol of a spec then runs in seconds, without network,
before the real encoder's hours (tests/test_hf.py and benchmarks/hf_encoder_cost.py use it).
Its accuracy means nothing beyond "the pipeline learns".
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def save_tiny_encoder(
    directory: str | Path,
    texts: Iterable[str],
    *,
    vocab_size: int = 4000,
    hidden_size: int = 32,
    layers: int = 2,
    max_positions: int = 128,
    seed: int = 0,
) -> Path:
    """Save a tokenizer trained on ``texts`` and a random BERT sized by the arguments."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    directory = Path(directory)
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS))
    tokenizer.train_from_iterator(list(texts), trainer)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=max_positions,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertModel(config)
    model.save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory
