"""Tokenizers made in the test with the tokenizers library itself: nothing is downloaded."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

SENTENCES = [
    "The hub routes every request to a member's GPU.",
    "Providers are untrusted: the hub counts tokens itself.",
    "A credit is a million micro-credits; amounts are integers.",
    "Members share their idle GPUs with the club.",
    "def count(text): return len(text.split())",
]


def byte_level_bpe(sentences: list[str] = SENTENCES, vocab_size: int = 300) -> Tokenizer:
    """A tiny byte-level BPE, like GPT-2's and Llama 3's: it encodes any text, known words in fewer tokens."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(sentences, trainer)
    # Like many real ones, it adds begin and end tokens unless asked not to; the hub counts without them.
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        special_tokens=[("<s>", tokenizer.token_to_id("<s>")), ("</s>", tokenizer.token_to_id("</s>"))],
    )
    return tokenizer


def word_level(words: list[str], *, unknown: bool = True) -> Tokenizer:
    """One token per known word; without an unknown token it cannot encode a word it lacks."""
    vocab = {word: index for index, word in enumerate(words)}
    if unknown:
        vocab["[UNK]"] = len(vocab)
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]" if unknown else None))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer


def tokenizer_json(tokenizer: Tokenizer | None = None) -> bytes:
    """The bytes of a tokenizer.json file, as an admin would upload it."""
    return (tokenizer or byte_level_bpe()).to_str().encode()
