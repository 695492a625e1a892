"""A tiny Llama model in GGUF, made at test time: nothing is downloaded, and the same file comes out every time.

Two layers, 64 wide, random weights from a fixed seed: it writes nonsense, but deterministic nonsense, which is
all the tests need (the same text at temperature 0 from the server directly and through the hub). The vocabulary
is a byte-level BPE trained with `tokenizers` on a few sentences, over printable ASCII only, so every token the
model can write prints at least one byte and no token can split a UTF-8 character.

    python -m tests.support.tiny_gguf OUT.gguf
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

MODEL_NAME = "tiny-llama"
BOS, EOS = "<|startoftext|>", "<|endoftext|>"  # names llama.cpp knows: it ends a turn at EOS
SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "A club of friends shares the GPUs they are not using tonight.",
    "Members send requests to the hub, and agents forward them to model servers.",
    "Say hello to the tiny model; it answers with words it has seen before.",
    "Tokens are counted, credits move, and every answer is billed exactly once.",
    "user: hi there\nassistant: hello, how can I help you today?\n",
)
# Whatever the template is given, it renders text the vocabulary covers: roles and content, one line each.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{{ message['role'] + ': ' + message['content'] + '\n' }}"
    "{%- else -%}{{ message['role'] + ': ' }}"
    "{%- for part in message['content'] -%}{%- if part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{{ '\n' }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'assistant:' }}{%- endif -%}"
)


@dataclass(frozen=True)
class Shape:
    vocab: int
    embedding: int = 64
    layers: int = 2
    heads: int = 2
    feed_forward: int = 128
    context: int = 2048

    @property
    def head_dim(self) -> int:
        return self.embedding // self.heads


@dataclass(frozen=True)
class Vocabulary:
    tokens: list[str]
    types: list[int]
    merges: list[str]
    bos: int
    eos: int


def _byte_alphabet() -> dict[int, str]:
    """GPT-2's map from bytes to the printable characters that stand for them in a byte-level vocabulary."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes = list(printable)
    shift = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + shift)
            shift += 1
    return {byte: chr(code) for byte, code in zip(printable, codes, strict=True)}


def vocabulary(merges: int = 200) -> Vocabulary:
    """A byte-level BPE vocabulary over printable ASCII plus newline and tab, trained on SENTENCES."""
    alphabet = _byte_alphabet()
    symbols = [alphabet[b] for b in (9, 10, *range(32, 127))]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=len(symbols) + 2 + merges,
        initial_alphabet=symbols,
        special_tokens=[BOS, EOS],
        show_progress=False,
        limit_alphabet=len(symbols),
    )
    tokenizer.train_from_iterator(SENTENCES, trainer)
    by_id = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    tokens = [token for token, _ in by_id]
    assert [index for _, index in by_id] == list(range(len(tokens))), "the trained vocabulary has holes"
    model = json.loads(tokenizer.to_str())["model"]
    pairs = [pair if isinstance(pair, str) else " ".join(pair) for pair in model["merges"]]
    special = {BOS, EOS}
    types = [int(gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL) for t in tokens]
    return Vocabulary(tokens, types, pairs, tokens.index(BOS), tokens.index(EOS))


def _weights(shape: Shape, seed: int) -> dict[str, np.ndarray]:
    """Random weights, in numpy's (rows, columns) order: GGUF stores each shape reversed, as llama.cpp wants it."""
    rng = np.random.default_rng(seed)

    def random(*dims: int, scale: float) -> np.ndarray:
        return (rng.standard_normal(dims) * scale).astype(np.float32)

    width, ff = shape.embedding, shape.feed_forward
    tensors = {
        "token_embd.weight": random(shape.vocab, width, scale=1.0),
        "output_norm.weight": np.ones(width, dtype=np.float32),
        "output.weight": random(shape.vocab, width, scale=1.0),
    }
    for layer in range(shape.layers):
        block = f"blk.{layer}"
        tensors |= {
            f"{block}.attn_norm.weight": np.ones(width, dtype=np.float32),
            f"{block}.attn_q.weight": random(width, width, scale=0.2),
            f"{block}.attn_k.weight": random(width, width, scale=0.2),
            f"{block}.attn_v.weight": random(width, width, scale=0.2),
            f"{block}.attn_output.weight": random(width, width, scale=0.2),
            f"{block}.ffn_norm.weight": np.ones(width, dtype=np.float32),
            f"{block}.ffn_gate.weight": random(ff, width, scale=0.2),
            f"{block}.ffn_up.weight": random(ff, width, scale=0.2),
            f"{block}.ffn_down.weight": random(width, ff, scale=0.2),
        }
    return tensors


def write(path: Path, *, seed: int = 10) -> Path:
    """Write the tiny model to `path` (about 500 KB) and return it."""
    vocab = vocabulary()
    shape = Shape(vocab=len(vocab.tokens))
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name(MODEL_NAME)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(shape.context)
    writer.add_embedding_length(shape.embedding)
    writer.add_block_count(shape.layers)
    writer.add_feed_forward_length(shape.feed_forward)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.heads)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(shape.vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    writer.add_token_merges(vocab.merges)
    writer.add_bos_token_id(vocab.bos)
    writer.add_eos_token_id(vocab.eos)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)
    for name, tensor in _weights(shape, seed).items():
        writer.add_tensor(name, tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


if __name__ == "__main__":
    print(write(Path(sys.argv[1] if len(sys.argv) > 1 else "tiny.gguf")))
