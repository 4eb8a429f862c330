"""Build a Qwen2.5-compatible tokenizer directory without the model hub.

The Qwen BPE vocabulary is public as a tiktoken rank file (``qwen.tiktoken``) inside the
``dashscope`` wheel on PyPI. Qwen2/Qwen2.5 kept that vocabulary unchanged: the rank of
a byte string IS its token id (``b"Hello"`` -> 9707, ``b" world"`` -> 1879,
``b"!"`` -> 0), so the ids for plain text are the real Qwen2.5 ids.

``build_qwen25_tokenizer`` converts the ranks into a byte-level BPE ``tokenizers`` model:

* merges: for every multi-byte token, BPE over its bytes restricted to lower ranks
  yields exactly two parts; that pair is the merge creating the token, and merges are
  ordered by the rank of the token they create (151,387 merges, like Qwen2's
  ``merges.txt``). BPE with these merges reproduces tiktoken's rank-based BPE;
* pre-tokenizer: NFC normalizer, Qwen2's split regex (digits one by one, so "12.5" is
  4 tokens) then ByteLevel without its own regex; ByteLevel decoder;
* the 22 added tokens of Qwen2.5 (151643..151664; ``<tool_call>`` .. ``<|file_sep|>``
  are not special), eos ``<|im_end|>``, pad ``<|endoftext|>``, no bos, and Qwen2.5's
  chat template (with its default system prompt; Quicksviewer itself never uses it).

``build_quicksviewer_tokenizer`` then adds the 8 Quicksviewer markers exactly as the
original ``initialize_vision_tokenizer`` does (``tokenizer.add_tokens(pair,
special_tokens=True)`` in the order patch, video, im, thumbnail), giving ids
151665..151672 and ``len(tokenizer) == 151673``.

Both directories hold ``tokenizer.json`` (fast) and ``vocab.json`` + ``merges.txt``
(what the original's ``use_fast=False`` slow ``Qwen2Tokenizer`` of transformers 4.44
reads; transformers 5 only has the fast implementation and ignores ``use_fast``).
``tokenizer_config.json`` is written in the Qwen2.5 hub format (``added_tokens_decoder``
and ``chat_template`` inline) so old and new transformers read the same settings.
The slow and fast paths are equivalent here because both apply NFC, the same regex,
the same byte-to-unicode map and the same merges, and split added tokens out first;
tests/model/test_checkpoints.py asserts equal ids against an independent slow-style BPE.

CLI: ``python -m tools tokenizer --out DIR [--base-only | --ranks-only]``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from qsv_reference.constants import MARKERS
from tools import ToolError
from tools.pin import sha256_file

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CACHE_DIR = REPO_ROOT / "build" / "cache"

RANKS_MEMBER = "dashscope/resources/qwen.tiktoken"
RANKS_FILENAME = "qwen.tiktoken"
QWEN_TIKTOKEN_SHA256 = (
    "b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186"
)
QWEN_VOCAB_SIZE = 151643

QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
    r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Qwen2.5's added tokens in id order starting at 151643, with their "special" flag.
QWEN25_ADDED_TOKENS = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)
QWEN25_EOS = "<|im_end|>"
QWEN25_PAD = "<|endoftext|>"
QWEN25_MODEL_MAX_LENGTH = 131072
# The stage-3 training script passes --model_max_length 32768, which the saved
# tokenizer_config.json of a Quicksviewer checkpoint carries.
QUICKSVIEWER_MODEL_MAX_LENGTH = 32768

QWEN25_CHAT_TEMPLATE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
)


class TokenizerBuildError(ToolError):
    """The Qwen ranks could not be obtained or verified."""


def _download_dashscope_wheel(cache_dir: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["--dest", str(cache_dir), "dashscope"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(cache_dir.glob("dashscope-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise TokenizerBuildError(
            "could not download the dashscope wheel (holder of qwen.tiktoken) with "
            f"{' '.join(cmd)}:\n{proc.stdout}{proc.stderr}\nDownload it by hand into "
            f"{cache_dir} or pass the extracted qwen.tiktoken as ranks_path."
        )
    return wheels[-1]


def fetch_qwen_ranks(cache_dir: Path | None = None) -> Path:
    """Return the path of a verified ``qwen.tiktoken`` in ``cache_dir``.

    Uses a cached copy if its sha256 matches, else extracts it from a cached
    ``dashscope-*.whl``, else downloads that wheel with ``pip download --no-deps``.
    """
    cache_dir = Path(cache_dir or DEFAULT_CACHE_DIR)
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / RANKS_FILENAME
    if target.is_file() and sha256_file(target) == QWEN_TIKTOKEN_SHA256:
        return target
    wheels = sorted(cache_dir.glob("dashscope-*.whl"))
    wheel = wheels[-1] if wheels else _download_dashscope_wheel(cache_dir)
    with zipfile.ZipFile(wheel) as zf:
        try:
            data = zf.read(RANKS_MEMBER)
        except KeyError:
            raise TokenizerBuildError(f"{wheel} has no {RANKS_MEMBER}") from None
    if hashlib.sha256(data).hexdigest() != QWEN_TIKTOKEN_SHA256:
        raise TokenizerBuildError(
            f"{RANKS_MEMBER} in {wheel.name} has sha256 "
            f"{hashlib.sha256(data).hexdigest()}, expected {QWEN_TIKTOKEN_SHA256}"
        )
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(target)
    return target


def load_qwen_ranks(path: Path) -> dict[bytes, int]:
    """Read a tiktoken rank file (``base64(token) rank`` per line), sha256-checked."""
    path = Path(path)
    actual = sha256_file(path)
    if actual != QWEN_TIKTOKEN_SHA256:
        raise TokenizerBuildError(
            f"{path} has sha256 {actual}, expected {QWEN_TIKTOKEN_SHA256}"
        )
    ranks = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    if sorted(ranks.values()) != list(range(QWEN_VOCAB_SIZE)):
        raise TokenizerBuildError(
            f"{path} does not hold ranks 0..{QWEN_VOCAB_SIZE - 1}"
        )
    return ranks


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode map used by ByteLevel BPE."""
    printable = list(range(ord("!"), ord("~") + 1))
    printable += list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _creating_pair(ranks: dict[bytes, int], token: bytes) -> tuple[bytes, bytes]:
    """The pair whose merge creates ``token``: rank-BPE over its bytes below its rank."""
    limit = ranks[token]
    parts = [bytes([b]) for b in token]
    while len(parts) > 2:
        best, best_rank = None, limit
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < best_rank:
                best, best_rank = i, rank
        if best is None:
            break
        parts[best : best + 2] = [parts[best] + parts[best + 1]]
    if len(parts) != 2:
        raise TokenizerBuildError(f"token {token!r} is not reachable by BPE merges")
    return parts[0], parts[1]


def ranks_to_vocab_merges(
    ranks: dict[bytes, int],
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Convert tiktoken ranks to a ByteLevel BPE vocab and rank-ordered merges."""
    byte_map = bytes_to_unicode()

    def encode(token: bytes) -> str:
        return "".join(byte_map[b] for b in token)

    vocab = {encode(token): rank for token, rank in ranks.items()}
    merges = []
    for token, _ in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) > 1:
            left, right = _creating_pair(ranks, token)
            merges.append((encode(left), encode(right)))
    return vocab, merges


def _added_token_entry(content: str, special: bool) -> dict:
    return {
        "content": content,
        "lstrip": False,
        "normalized": False,
        "rstrip": False,
        "single_word": False,
        "special": special,
    }


def _tokenizer_config(
    added: dict[int, tuple[str, bool]], model_max_length: int, extra: dict | None = None
) -> dict:
    config = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(i): _added_token_entry(content, special)
            for i, (content, special) in sorted(added.items())
        },
        "additional_special_tokens": [
            content
            for content, special in QWEN25_ADDED_TOKENS
            if special and content != QWEN25_PAD
        ],
        "bos_token": None,
        "chat_template": QWEN25_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": QWEN25_EOS,
        "errors": "replace",
        "model_max_length": model_max_length,
        "pad_token": QWEN25_PAD,
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    config.update(extra or {})
    return config


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(
        json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    tmp.replace(path)


def _write_tokenizer_json(path: Path, tok) -> None:
    """Serialize a ``tokenizers.Tokenizer`` like Qwen2.5's ``tokenizer.json``.

    Merges are written as ``"left right"`` strings (tokenizers >= 0.20 writes pairs,
    which the tokenizers 0.19 of the original's transformers 4.44 cannot read; byte-
    level symbols never contain a space). The Python ``decoders.ByteLevel`` ignores
    its options and serializes defaults; Qwen's file spells them out as false.
    Decoding does not read them either way.
    """
    data = json.loads(tok.to_str())
    data["model"]["merges"] = [
        merge if isinstance(merge, str) else " ".join(merge)
        for merge in data["model"]["merges"]
    ]
    data["decoder"] = {
        "type": "ByteLevel",
        "add_prefix_space": False,
        "trim_offsets": False,
        "use_regex": False,
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(
        json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    tmp.replace(path)


def _write_vocab_files(out_dir: Path, vocab: dict[str, int], merges) -> None:
    _write_json(out_dir / "vocab.json", vocab)
    lines = ["#version: 0.2"] + [f"{left} {right}" for left, right in merges]
    (out_dir / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def build_qwen25_tokenizer(
    out_dir: Path,
    *,
    ranks_path: Path | None = None,
    cache_dir: Path | None = None,
    model_max_length: int = QWEN25_MODEL_MAX_LENGTH,
) -> Path:
    """Write a Qwen2.5-like tokenizer directory (151,665 tokens) into ``out_dir``."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ranks = load_qwen_ranks(ranks_path or fetch_qwen_ranks(cache_dir))
    vocab, merges = ranks_to_vocab_merges(ranks)

    tok = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=merges,
            dropout=None,
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False
            ),
            pre_tokenizers.ByteLevel(
                add_prefix_space=False, trim_offsets=False, use_regex=False
            ),
        ]
    )
    tok.post_processor = processors.ByteLevel(
        add_prefix_space=False, trim_offsets=False, use_regex=False
    )
    tok.decoder = decoders.ByteLevel()
    added = {}
    for offset, (content, special) in enumerate(QWEN25_ADDED_TOKENS):
        token = AddedToken(content, special=special, normalized=False)
        added_now = (
            tok.add_special_tokens([token]) if special else tok.add_tokens([token])
        )
        token_id = tok.token_to_id(content)
        if added_now != 1 or token_id != QWEN_VOCAB_SIZE + offset:
            raise TokenizerBuildError(f"{content} got id {token_id}")
        added[token_id] = (content, special)

    _write_tokenizer_json(out_dir / "tokenizer.json", tok)
    _write_vocab_files(out_dir, vocab, merges)
    _write_json(
        out_dir / "tokenizer_config.json", _tokenizer_config(added, model_max_length)
    )
    return out_dir


def add_quicksviewer_markers(tokenizer) -> dict[str, int]:
    """Add the 8 markers like ``initialize_vision_tokenizer``; return name -> id."""
    names = list(MARKERS)
    for first, second in zip(names[0::2], names[1::2]):
        tokenizer.add_tokens([MARKERS[first], MARKERS[second]], special_tokens=True)
    return {name: tokenizer.convert_tokens_to_ids(MARKERS[name]) for name in names}


def build_quicksviewer_tokenizer(
    out_dir: Path,
    *,
    base_dir: Path | None = None,
    cache_dir: Path | None = None,
    model_max_length: int = QUICKSVIEWER_MODEL_MAX_LENGTH,
) -> dict[str, int]:
    """Write the Quicksviewer tokenizer (Qwen2.5 + 8 markers) into ``out_dir``.

    ``base_dir`` is a directory from ``build_qwen25_tokenizer``; without it the base is
    built (once) under ``cache_dir/qwen2.5-tokenizer``. Returns the marker ids.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if base_dir is None:
        base_dir = cached_qwen25_tokenizer(cache_dir)
    base_dir = Path(base_dir)
    # The generic wrapper keeps the serialized pipeline as is (the Qwen2Tokenizer class
    # of transformers 5 rebuilds it), so only the added tokens change.
    backend = Tokenizer.from_file(str(base_dir / "tokenizer.json"))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend)
    base_len = len(tokenizer)
    marker_ids = add_quicksviewer_markers(tokenizer)
    expected = list(range(base_len, base_len + len(MARKERS)))
    if list(marker_ids.values()) != expected or len(tokenizer) != expected[-1] + 1:
        raise TokenizerBuildError(f"unexpected marker ids {marker_ids}")

    added = {}
    for token_id, token in tokenizer.added_tokens_decoder.items():
        added[token_id] = (token.content, token.special)
    _write_tokenizer_json(out_dir / "tokenizer.json", tokenizer.backend_tokenizer)
    for name in ("vocab.json", "merges.txt"):
        (out_dir / name).write_bytes((base_dir / name).read_bytes())
    extra = {"padding_side": "right"}
    config = _tokenizer_config(added, model_max_length, extra)
    _write_json(out_dir / "tokenizer_config.json", config)
    return marker_ids


# A locally trained byte-level BPE laid out like Llama-3's tokenizer: it prepends a
# BOS (a TemplateProcessing post-processor, as Llama-3's tokenizer.json does), has
# Llama-3's header and turn tokens, and a small vocabulary whose ids are nothing like
# Qwen's. It stands in for every non-Qwen tokenizer (and for the Llama-3.1 variant's
# tokenizer, which cannot be downloaded here).
BPE_BOS = "<|begin_of_text|>"
BPE_EOS = "<|eot_id|>"
BPE_PAD = "<|reserved_special_token_0|>"
BPE_SPECIAL_TOKENS = (
    BPE_BOS,
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    BPE_EOS,
    BPE_PAD,
)
BPE_VOCAB_SIZE = 1024


def _bpe_corpus():
    """A fixed training text: chat words, timestamps and digits, ASCII words."""
    words = (
        "what is happening in the video describe this image user system assistant "
        "the a of and to it on with for as at by from that this which who where "
        "when why how man woman dog cat car tree house street sky water red blue "
        "green yellow black white left right top bottom first then finally answer "
        "question option best letter frame second minute scene event people"
    ).split()
    for i in range(400):
        yield " ".join(words[(i * 7 + j) % len(words)] for j in range(12)) + "."
        yield f"{i / 2:.1f} {i}.5 {i * 37 % 1000} (A) (B) (C) (D) \n\n"


def build_bpe_tokenizer(
    out_dir: Path,
    *,
    vocab_size: int = BPE_VOCAB_SIZE,
    model_max_length: int = QUICKSVIEWER_MODEL_MAX_LENGTH,
    base: bool = False,
) -> dict[str, int]:
    """Train the BPE above, add the 8 markers as the original does, save the
    tokenizer into ``out_dir``; return the marker ids. Deterministic. ``base``: the
    tokenizer of a base LLM instead (no markers, no pad token, like Llama-3.1's)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from tokenizers import trainers
    from transformers import PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(BPE_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_bpe_corpus(), trainer)
    bos_id = backend.token_to_id(BPE_BOS)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BPE_BOS} $A",
        pair=f"{BPE_BOS} $A $B",
        special_tokens=[(BPE_BOS, bos_id)],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BPE_BOS,
        eos_token=BPE_EOS,
        pad_token=None if base else BPE_PAD,
        model_max_length=model_max_length,
        padding_side="right",
    )
    marker_ids = {} if base else add_quicksviewer_markers(tokenizer)
    tokenizer.save_pretrained(str(out_dir))
    # the class name transformers 4.44 (the original's) also knows
    config_path = out_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.pop("backend", None)
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    _write_json(config_path, config)
    return marker_ids


def _source_stamp() -> str:
    """Cache key of the built tokenizers: the sha256 of this module's source."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def _cached_build(target: Path, build) -> Path:
    """Run ``build(tmp_dir)`` unless ``target`` holds a build of this source version."""
    stamp = _source_stamp()
    stamp_file = target / ".source-sha256"
    if stamp_file.is_file() and stamp_file.read_text().strip() == stamp:
        if all((target / name).is_file() for name in TOKENIZER_FILES):
            return target
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    build(tmp)
    (tmp / ".source-sha256").write_text(stamp + "\n")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def cached_qwen25_tokenizer(cache_dir: Path | None = None) -> Path:
    """The base Qwen2.5 tokenizer, built once into ``cache_dir/qwen2.5-tokenizer``."""
    cache_dir = Path(cache_dir or DEFAULT_CACHE_DIR)
    return _cached_build(
        cache_dir / "qwen2.5-tokenizer",
        lambda tmp: build_qwen25_tokenizer(tmp, cache_dir=cache_dir),
    )


def cached_quicksviewer_tokenizer(cache_dir: Path | None = None) -> Path:
    """The Quicksviewer tokenizer, built once into ``cache_dir/quicksviewer-tokenizer``."""
    cache_dir = Path(cache_dir or DEFAULT_CACHE_DIR)
    base_dir = cached_qwen25_tokenizer(cache_dir)
    return _cached_build(
        cache_dir / "quicksviewer-tokenizer",
        lambda tmp: build_quicksviewer_tokenizer(tmp, base_dir=base_dir),
    )
