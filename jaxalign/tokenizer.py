"""Tokenizers: Hugging Face tokenizers from a directory or built from a GGUF file's metadata."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile

from jaxalign.models.config import CheckpointError


def _cache_root() -> str:
    return os.environ.get("JAXALIGN_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "jaxalign"))


def load(path: str | os.PathLike):
    """A `transformers` tokenizer with its chat template.

    `path` is a packaged model name (see `jaxalign.models.registry`), a directory holding
    tokenizer.json / tokenizer_config.json, or a `.gguf` file whose metadata holds the vocabulary,
    merges and chat template. Converting GGUF metadata takes
    seconds, so the converted tokenizer is cached under $JAXALIGN_CACHE (default
    ~/.cache/jaxalign), keyed by the file's path, size and modification time.
    """
    from transformers import AutoTokenizer

    from jaxalign.models.registry import resolve

    path = resolve(os.fspath(path))
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: tokenizer path not found")
    if os.path.isdir(path):
        if not any(os.path.exists(os.path.join(path, f)) for f in
                   ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
            raise CheckpointError(f"{path}: no tokenizer.json / tokenizer_config.json in directory")
        return AutoTokenizer.from_pretrained(path)
    if not path.endswith(".gguf"):
        raise CheckpointError(f"{path}: expected a tokenizer directory or a .gguf file")
    stat = os.stat(path)
    key = hashlib.sha256(f"{os.path.abspath(path)}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
    cached = os.path.join(_cache_root(), "tokenizers", key[:24])
    if os.path.exists(os.path.join(cached, "tokenizer_config.json")):
        return AutoTokenizer.from_pretrained(cached)
    try:
        tok = AutoTokenizer.from_pretrained(os.path.dirname(os.path.abspath(path)),
                                            gguf_file=os.path.basename(path))
    except Exception as e:
        raise CheckpointError(f"{path}: cannot build a tokenizer from GGUF metadata: {e}") from e
    try:
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        tmp = tempfile.mkdtemp(dir=os.path.dirname(cached))
        tok.save_pretrained(tmp)
        os.replace(tmp, cached)
    except OSError:  # a read-only home or a concurrent writer: the cache is only an optimisation
        shutil.rmtree(tmp, ignore_errors=True)
    return tok


def require_chat_template(tok, source: str) -> None:
    """Fails with `CheckpointError` unless `tok` has a chat template (prompts, SFT rows and rollouts
    are all rendered through it); `source` names where the tokenizer came from."""
    if not tok.chat_template:  # transformers tokenizers: None (or "") when absent
        raise CheckpointError(f"{source}: the tokenizer has no chat template; use a chat model's tokenizer, or "
                              "set one (tok.chat_template = ...; jaxalign.tokenizer.CHATML_TEMPLATE is append-only) "
                              "and save it with tok.save_pretrained(dir)")


def check_vocab(tok, vocab_size: int, source: str, model: str) -> None:
    """Fails with `CheckpointError` when the tokenizer can emit ids the model has no embedding for.

    Such ids index past the embedding table, which under jit reads NaN (JAX's out-of-bounds gather
    fills), so training would diverge at step 1 for a reason no learning rate can fix.
    """
    if len(tok) > vocab_size:
        raise CheckpointError(f"{source}: the tokenizer has {len(tok)} tokens but the model {model} embeds only "
                              f"{vocab_size}: use the model's own tokenizer (or resize the model's embeddings)")


CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""A ChatML template (append-only: a message's rendering never depends on later messages)."""


def train_sentencepiece(texts, out_dir: str, *, vocab_size: int = 512, model_type: str = "bpe",
                        split_digits: bool = True, chat_template: str = CHATML_TEMPLATE):
    """Trains a small SentencePiece tokenizer on `texts` and returns it as a `transformers` tokenizer.

    With `split_digits` every digit is its own token; without it frequent numbers become single
    pieces (copying a number is then copying a few tokens, which tiny models learn much sooner).
    Unknown characters fall back to bytes. ChatML control tokens (<|im_start|>, <|im_end|>,
    <|pad|>) are single special tokens and the chat template is set, so the result plugs into the
    same rollout and SFT code as any HF tokenizer. Saved to `out_dir` (reload with `jaxalign.tokenizer.load(out_dir)`).
    """
    import sentencepiece as spm
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import SentencePieceExtractor

    os.makedirs(out_dir, exist_ok=True)
    corpus = os.path.join(out_dir, "corpus.txt")
    chars: set[str] = set()
    with open(corpus, "w") as f:
        for t in texts:
            f.write(t.replace("\r", " ") + "\n")
            chars.update(t)
    # Byte fallback needs all 256 byte pieces, plus special pieces and each character seen.
    vocab_size = max(vocab_size, 256 + 6 + len(chars) + 16)
    prefix = os.path.join(out_dir, "spm")
    spm.SentencePieceTrainer.train(
        input=corpus, model_prefix=prefix, vocab_size=vocab_size, model_type=model_type, split_digits=split_digits,
        byte_fallback=True, character_coverage=1.0, user_defined_symbols=["<|im_start|>", "<|im_end|>"],
        pad_id=3, unk_id=0, bos_id=1, eos_id=2, pad_piece="<|pad|>", num_threads=1,
        max_sentence_length=1 << 16, minloglevel=2, remove_extra_whitespaces=False, hard_vocab_limit=False,
        allow_whitespace_only_pieces=True, normalization_rule_name="identity",
    )
    # The trained model is used through `tokenizers` (what transformers 5 runs): its BPE vocab and
    # merges, SentencePiece's "▁" space marker, and byte fallback for unseen characters.
    extracted = SentencePieceExtractor(prefix + ".model").extract(models.BPE)
    vocab, merges = extracted["vocab"], extracted["merges"]
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="never", split=False)
    backend.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>",
                                  eos_token="<|im_end|>", pad_token="<|pad|>",
                                  additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    tok.chat_template = chat_template
    tok.save_pretrained(out_dir)
    return load(out_dir)


def token_pieces(tok, ids, *, context: int = 4) -> list[str]:
    """The text each token of `ids` adds, for display (the run viewer's loss-mask view).

    Decoding a token alone loses what depends on its neighbours (a SentencePiece leading space,
    the bytes of a multi-byte character), so piece i is decode(ids[s : i+1]) minus decode(ids[s : i])
    with s = i - context, moved further left while the window starts inside a character. The token
    that completes a multi-byte character shows it; tokens ending inside one show U+FFFD. Without
    those U+FFFD the pieces join to `decode(ids)`.
    """
    ids = [int(i) for i in ids]
    kw = {"skip_special_tokens": False, "clean_up_tokenization_spaces": False}
    heads = [ids[max(0, i - context):i + 1] for i in range(len(ids))]
    full = tok.batch_decode(heads, **kw) if ids else []
    before = tok.batch_decode([h[:-1] for h in heads], **kw) if ids else []
    pieces = [f[len(b):] if f.startswith(b) else f for f, b in zip(full, before)]
    for i, p in enumerate(pieces):
        if "\ufffd" not in p and full[i].startswith(before[i]):
            continue
        # Rare (split characters): widen the window until it starts cleanly; where token i completes a
        # character, the prefix's trailing U+FFFD is not text (some decoders replace a whole invalid
        # byte run, valid characters included, so shorter prefixes are tried too).
        start = max(0, i - context)
        while start > 0 and i - start < 8 * context and tok.decode(ids[start:i + 1], **kw).startswith("\ufffd"):
            start -= 1
        f, best = tok.decode(ids[start:i + 1], **kw), None
        for k in range(i, start - 1, -1):  # the longest prefix of f that the tokens before i decode to
            b = tok.decode(ids[start:k], **kw)
            for cand in (b, b.rstrip("\ufffd")):
                if f.startswith(cand) and (best is None or len(cand) > len(best)):
                    best = cand
            if f.startswith(b) and not b.endswith("\ufffd"):
                break
        pieces[i] = f[len(best):] if best is not None else tok.decode([ids[i]], **kw)
    return pieces
