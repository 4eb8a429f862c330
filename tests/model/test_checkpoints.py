"""tools.checkpoints: the Qwen2.5 tokenizer, tiny original-format checkpoints, converter."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from qsv_reference.constants import MARKERS
from tests.helpers.project import CACHE_DIR, PROJECT_ROOT
from tools.checkpoints import convert as conv
from tools.checkpoints import tiny
from tools.checkpoints import tokenizer as tok
from tools.cli import main as tools_main

# Qwen2/Qwen2.5 ids that do not depend on our conversion (they are the tiktoken ranks).
KNOWN_IDS = {
    "Hello world": [9707, 1879],
    "<|im_start|>user\n": [151644, 872, 198],
    "<|im_start|>assistant\n": [151644, 77091, 198],
    "12.5": [16, 17, 13, 20],
    "0.5": [15, 13, 20],
    "!": [0],
}

CORPUS = [
    "Hello world",
    "What is happening in the video?",
    "I'm sure they'll say DON'T, we've seen it.",
    "x = [1, 22, 333]; print(f'{x!r}')\n\tif a >= b: return None\r\n",
    "2024-11-27 12:34:56.789 +0100 $1,234.50 3.14159 0.5 10.5 123.5",
    "   leading spaces, trailing spaces   \n\n\n  two blank lines",
    "naïve café résumé Ünïcödé — “quotes” ‘single’ …",
    "中文测试：视频里发生了什么？日本語のテキスト。한국어 텍스트.",
    "emoji 🙂🎬📹 and symbols ∑∫√∞ ≠ ≤ ≥",
    "ЧАСТЬ русского текста, ελληνικά, עברית, العربية",
    '<tag attr="v">content</tag> &amp; https://example.com/a?b=c#d',
    "",
]


def _random_texts(count: int = 200, seed: int = 0) -> list[str]:
    """Seeded strings over mixed scripts, digits, punctuation and whitespace."""
    import random

    rng = random.Random(seed)
    alphabet = (
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
        "     \n\n\t\r.,;:!?'\"()[]{}<>-_=+*/\\|@#$%^&~`"
        "éèüößñçåøæ中文字视频测试日本語한국어ЖжЩщΩλ🙂🎬∑√"
    )
    return [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60)))
        for _ in range(count)
    ]


@pytest.fixture(scope="module")
def base_tokenizer_dir():
    return tok.cached_qwen25_tokenizer(CACHE_DIR)


@pytest.fixture(scope="module")
def qsv_tokenizer_dir():
    return tok.cached_quicksviewer_tokenizer(CACHE_DIR)


@pytest.fixture(scope="module")
def ranks():
    return tok.load_qwen_ranks(tok.fetch_qwen_ranks(CACHE_DIR))


def _load(directory: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory))


def _sha256_tree(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


# ------------------------------------------------------------------- tokenizer
def test_ranks_file_is_pinned(tmp_path, ranks):
    assert len(ranks) == tok.QWEN_VOCAB_SIZE
    assert ranks[b"Hello"] == 9707 and ranks[b" world"] == 1879
    bad = tmp_path / "qwen.tiktoken"
    data = bytearray(tok.fetch_qwen_ranks(CACHE_DIR).read_bytes())
    data[:4] = b"IQ=="[::-1]
    bad.write_bytes(bytes(data))
    with pytest.raises(tok.TokenizerBuildError, match="sha256"):
        tok.load_qwen_ranks(bad)


def test_base_tokenizer_is_qwen25(base_tokenizer_dir):
    t = _load(base_tokenizer_dir)
    assert len(t) == 151665
    for offset, (content, special) in enumerate(tok.QWEN25_ADDED_TOKENS):
        token_id = 151643 + offset
        assert t.convert_tokens_to_ids(content) == token_id
        assert t.added_tokens_decoder[token_id].special is special
    assert t.eos_token == "<|im_end|>" and t.eos_token_id == 151645
    assert t.pad_token == "<|endoftext|>" and t.pad_token_id == 151643
    assert t.bos_token is None
    for text, ids in KNOWN_IDS.items():
        assert t(text).input_ids == ids, text
    assert t.decode(t(CORPUS[7]).input_ids) == CORPUS[7]
    rendered = t.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
        "assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_plain_text_ids_are_the_tiktoken_ranks(base_tokenizer_dir, ranks):
    """Qwen's own tokenizer was tiktoken with these ranks and this regex."""
    import tiktoken

    enc = tiktoken.Encoding(
        name="qwen-ranks",
        pat_str=tok.QWEN2_PRETOKENIZE_REGEX,
        mergeable_ranks=ranks,
        special_tokens={},
    )
    t = _load(base_tokenizer_dir)
    for text in CORPUS + _random_texts():
        text = unicodedata.normalize("NFC", text)
        assert t(text).input_ids == enc.encode_ordinary(text), repr(text)


def _slow_qwen2_encoder(directory: Path):
    """An independent slow-tokenizer oracle (transformers 4.x ``Qwen2Tokenizer``
    semantics): NFC, added tokens split out first, regex, byte-to-unicode, BPE with
    the merges.txt ranks applied to all occurrences of the best pair."""
    import regex

    vocab = json.loads((directory / "vocab.json").read_text(encoding="utf-8"))
    lines = (directory / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
    merge_rank = {tuple(line.split(" ")): i for i, line in enumerate(lines) if line}
    config = json.loads((directory / "tokenizer_config.json").read_text())
    added = {v["content"]: int(k) for k, v in config["added_tokens_decoder"].items()}
    splitter = regex.compile(
        "("
        + "|".join(regex.escape(a) for a in sorted(added, key=len, reverse=True))
        + ")"
    )
    pattern = regex.compile(tok.QWEN2_PRETOKENIZE_REGEX)
    byte_map = tok.bytes_to_unicode()

    def bpe(word: tuple[str, ...]) -> tuple[str, ...]:
        while len(word) > 1:
            pairs = set(zip(word[:-1], word[1:]))
            best = min(pairs, key=lambda p: merge_rank.get(p, float("inf")))
            if best not in merge_rank:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        return word

    def encode(text: str) -> list[int]:
        ids = []
        for chunk in splitter.split(unicodedata.normalize("NFC", text)):
            if chunk in added:
                ids.append(added[chunk])
                continue
            for piece in pattern.findall(chunk):
                word = tuple(byte_map[b] for b in piece.encode("utf-8"))
                ids.extend(vocab[part] for part in bpe(word))
        return ids

    return encode


def test_slow_tokenizer_semantics_give_the_same_ids(qsv_tokenizer_dir):
    """The original loads the tokenizer with use_fast=False (slow Qwen2Tokenizer from
    vocab.json + merges.txt); transformers 5 only has the fast one. Same ids."""
    slow = _slow_qwen2_encoder(qsv_tokenizer_dir)
    fast = _load(qsv_tokenizer_dir)
    prompt = (
        "<|im_start|>user\n<video_start><thumbnail_start><thumbnail_end>0.5 1.5\n"
        "<im_start><patch_start><patch_end><im_end>\nWhat's 12.5?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    for text in [prompt] + CORPUS + _random_texts(60, seed=1):
        assert fast(text).input_ids == slow(text), repr(text)


def test_quicksviewer_markers(qsv_tokenizer_dir):
    t = _load(qsv_tokenizer_dir)
    assert len(t) == 151673
    for offset, marker in enumerate(MARKERS.values()):
        assert t.convert_tokens_to_ids(marker) == 151665 + offset
        assert t(marker).input_ids == [151665 + offset]
        assert t.added_tokens_decoder[151665 + offset].special
    config = json.loads((qsv_tokenizer_dir / "tokenizer_config.json").read_text())
    assert config["model_max_length"] == tok.QUICKSVIEWER_MODEL_MAX_LENGTH
    assert config["chat_template"] == tok.QWEN25_CHAT_TEMPLATE
    # "left right" merge strings: what tokenizers 0.19 (transformers 4.44) can read
    data = json.loads((qsv_tokenizer_dir / "tokenizer.json").read_text())
    assert len(data["model"]["merges"]) == 151387
    merges_txt = (qsv_tokenizer_dir / "merges.txt").read_text(encoding="utf-8")
    assert (
        data["model"]["merges"][:2] == merges_txt.splitlines()[1:3] == ["Ġ Ġ", "ĠĠ ĠĠ"]
    )


def test_vocab_and_merges_alone_load_the_same(tmp_path, qsv_tokenizer_dir):
    """A slow-tokenizer save (no tokenizer.json) gives the same fast tokenizer."""
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(qsv_tokenizer_dir / name, tmp_path / name)
    full, slow_layout = _load(qsv_tokenizer_dir), _load(tmp_path)
    assert len(slow_layout) == len(full)
    for text in CORPUS[:6] + list(MARKERS.values()):
        assert slow_layout(text).input_ids == full(text).input_ids


# ------------------------------------------------------------------------ tiny
@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return tiny.make_tiny_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "quicksviewer-tiny", seed=0
    )


def test_tiny_checkpoint_is_in_the_original_format(tiny_ckpt):
    from safetensors import safe_open

    config = json.loads((tiny_ckpt / "config.json").read_text())
    t = _load(tiny_ckpt)
    assert config["model_type"] == "quicksviewer_qwen"
    assert config["architectures"] == ["LlavaQwenForCausalLM"]
    assert config["vocab_size"] == len(t) == 151673
    assert config["pad_token_id"] == t.pad_token_id
    assert config["eos_token_id"] == t.eos_token_id
    expected = {
        "mm_resampler_type": "qformer",
        "mm_projector_type": "identity",
        "mm_cubing": "momentum",
        "is_cubing": True,
        "mm_use_thumbnail": True,
        "cubing_vit_forward_n_layers": -1,
        "mm_patch_merge_type": "flat",
        "image_aspect_ratio": "anyres",
        "image_grid_pinpoints": tiny.IMAGE_GRID_PINPOINTS,
        "mm_vision_select_layer": -2,
        "mm_vision_tower": "siglip-tiny",
        "num_queries": 64,
        "num_heads": 2,
        "max_size": [300, 24, 24],
        "tie_word_embeddings": False,
        "rope_theta": 1000000.0,
        "torch_dtype": "bfloat16",
    }
    for key, value in expected.items():
        assert config[key] == value, key
    for flag in ("im", "patch", "video", "thumbnail"):
        assert config[f"mm_use_{flag}_start_end"] is True

    tower = tiny_ckpt / "siglip-tiny"
    tower_config = json.loads((tower / "config.json").read_text())
    assert tower_config["model_type"] == "siglip_vision_model"
    assert (tower_config["image_size"], tower_config["patch_size"]) == (384, 14)
    preprocessor = json.loads((tower / "preprocessor_config.json").read_text())
    assert preprocessor["size"] == {"height": 384, "width": 384}
    assert preprocessor["resample"] == 3 and preprocessor["image_mean"] == [0.5] * 3

    index = json.loads((tiny_ckpt / "model.safetensors.index.json").read_text())
    names = set(index["weight_map"])
    prefix = tiny.TOWER_PREFIX
    for name in (
        f"{prefix}post_layernorm.weight",
        f"{prefix}head.probe",
        f"{prefix}head.attention.in_proj_weight",
        f"{prefix}head.mlp.fc2.bias",
        "model.vision_resampler.proj",
        "model.vision_resampler.attn.in_proj_bias",
        "model.cubing.proj_fn.3.weight",
        "model.cubing.thumbnail_fn.1.weight",
        "model.layers.1.mlp.down_proj.weight",
        "lm_head.weight",
    ):
        assert name in names, name
    shard = tiny_ckpt / index["weight_map"]["model.vision_resampler.proj"]
    with safe_open(str(shard), framework="pt") as f:
        proj = f.get_tensor("model.vision_resampler.proj")
    assert tuple(proj.shape) == (128, 128) and str(proj.dtype) == "torch.bfloat16"
    generation = json.loads((tiny_ckpt / "generation_config.json").read_text())
    assert generation["do_sample"] is True and generation["top_k"] == 20


def test_tiny_checkpoint_is_deterministic_per_seed(tmp_path, tiny_ckpt):
    again = tiny.make_tiny_checkpoint(tmp_path / "again", seed=0)
    other = tiny.make_tiny_checkpoint(tmp_path / "other", seed=1, dtype="fp32")
    first = _sha256_tree(tiny_ckpt)
    assert _sha256_tree(again) == first
    second = _sha256_tree(other)
    shards = [name for name in first if name.endswith(".safetensors")]
    assert all(first[name] != second[name] for name in shards)
    assert json.loads((other / "config.json").read_text())["torch_dtype"] == "float32"


def test_tiny_cli_rejects_unknown_dtype(capsys):
    with pytest.raises(SystemExit):
        tools_main(["tiny", "--out", "/nonexistent", "--dtype", "fp8"])
    assert "invalid choice" in capsys.readouterr().err


# ------------------------------------------------------------------- converter
def _clone(src: Path, dst: Path) -> Path:
    """A copy of a checkpoint whose weights are hard links (cheap, same bytes)."""
    shutil.copytree(src, dst, copy_function=os.link)
    for name in ("config.json",):
        path = dst / name
        data = path.read_bytes()
        path.unlink()
        path.write_bytes(data)
    return dst


def _set_config(ckpt_dir: Path, **changes) -> None:
    path = ckpt_dir / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config, indent=2))


@pytest.fixture(scope="module")
def converted(tiny_ckpt, tmp_path_factory):
    before = _sha256_tree(tiny_ckpt)
    dst = tmp_path_factory.mktemp("converted") / "qsv-sglang"
    result = conv.convert_checkpoint(tiny_ckpt, dst, log=lambda _: None)
    return result, before


def test_converted_config(converted, tiny_ckpt):
    result, _ = converted
    dst, config = result.dst, json.loads((result.dst / "config.json").read_text())
    assert config == result.config
    assert config["model_type"] == "quicksviewer"
    assert config["architectures"] == ["QuicksviewerForCausalLM"]
    tower = json.loads((tiny_ckpt / "siglip-tiny" / "config.json").read_text())
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers"):
        assert config["vision_config"][key] == tower[key]
    assert (
        config["vision_config"]["num_attention_heads"] == tower["num_attention_heads"]
    )
    assert config["vision_config"]["model_type"] == "siglip_vision_model"
    assert result.vision_source == "directory" and not result.assumptions

    t = _load(tiny_ckpt)
    for name, marker in MARKERS.items():
        assert config[f"{name}_token_id"] == t.convert_tokens_to_ids(marker)
    assert (
        config["eos_token_id"]
        == config["text_config"]["eos_token_id"]
        == t.eos_token_id
    )
    assert config["pad_token_id"] == t.pad_token_id
    original = json.loads((tiny_ckpt / "config.json").read_text())
    assert config["bos_token_id"] == original["bos_token_id"]  # Qwen has no bos token
    text = config["text_config"]
    assert text["model_type"] == "qwen2" and text["vocab_size"] == 151673
    assert text["hidden_size"] == 128 and text["rope_theta"] == 1000000.0
    assert config["num_queries"] == 64 and config["resampler_num_heads"] == 2
    assert "resampler_max_size" not in config  # read by nothing: not written
    assert config["vision_feature_size"] == 24
    assert (config["cubing_momentum"], config["cubing_frames_per_cube"]) == (0.8, 5)
    assert config["cubing_temperature"] == 0.5 and config["use_thumbnail"] is True
    assert config["image_grid_pinpoints"][0] == [224, 448]
    assert len(config["image_grid_pinpoints"]) == 7
    assert (config["video_max_frames"], config["video_fps"]) == (420, 1)
    assert config["mm_use_thumbnail_start_end"] is True

    assert (dst / "config.original.json").read_bytes() == (
        tiny_ckpt / "config.json"
    ).read_bytes()
    assert (dst / "preprocessor_config.json").read_bytes() == (
        tiny_ckpt / "siglip-tiny" / "preprocessor_config.json"
    ).read_bytes()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (dst / name).read_bytes() == (tiny_ckpt / name).read_bytes()
    # generation_config.json: the same, except that it stops where the original's
    # chat() stops, at the tokenizer's EOS alone (<|im_end|>, not <|endoftext|>)
    original = json.loads((tiny_ckpt / "generation_config.json").read_text())
    generation = json.loads((dst / "generation_config.json").read_text())
    assert original["eos_token_id"] == [151645, 151643]
    assert generation == {**original, "eos_token_id": 151645}
    for shard in (
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ):
        assert os.path.samefile(dst / shard, tiny_ckpt / shard)
    converted_tokenizer = _load(dst)
    assert len(converted_tokenizer) == 151673


def test_converted_config_loads_in_the_sglang_config_class(converted):
    path = PROJECT_ROOT / "overlay/python/sglang/srt/configs/quicksviewer.py"
    if not path.is_file():
        pytest.skip("the SGLang config class is not in the overlay yet")
    import importlib.util

    spec = importlib.util.spec_from_file_location("qsv_sglang_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.QuicksviewerConfig.from_pretrained(str(converted[0].dst))
    assert config.marker_token_ids()["video_start"] == config.video_start_token_id
    assert config.text_config.vocab_size == 151673
    assert config.vision_config.patch_size == 14


def test_convert_is_idempotent_and_leaves_src_untouched(converted, tiny_ckpt):
    result, before = converted
    first = _sha256_tree(result.dst)
    conv.convert_checkpoint(tiny_ckpt, result.dst, log=lambda _: None)
    assert _sha256_tree(result.dst) == first
    assert _sha256_tree(tiny_ckpt) == before


def test_convert_cli_rejects_a_non_checkpoint(tmp_path):
    src = tmp_path / "llama"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"model_type": "llama"}))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools",
            "convert",
            str(src),
            str(tmp_path / "o"),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "not an original Quicksviewer checkpoint" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "case, message",
    [
        ("empty", "has no config.json"),
        ("converted", "already converted"),
        ("no_weights", "has no weights"),
        ("bad_tower_flag", "is not a SigLIP directory"),
        ("inside_src", "must be outside SRC"),
    ],
)
def test_convert_errors(tmp_path, tiny_ckpt, converted, capsys, case, message):
    src, dst, extra = tmp_path / "src", tmp_path / "dst", []
    if case == "empty":
        src.mkdir()
    elif case == "converted":
        src = converted[0].dst
    elif case == "no_weights":
        src.mkdir()
        shutil.copy(tiny_ckpt / "config.json", src / "config.json")
    elif case == "bad_tower_flag":
        src = tiny_ckpt
        extra = ["--vision-tower", str(tmp_path / "nowhere")]
    elif case == "inside_src":
        src, dst = tiny_ckpt, tiny_ckpt / "converted"
    assert tools_main(["convert", str(src), str(dst), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not (tiny_ckpt / "converted").exists()


def test_vision_tower_resolution(tmp_path, tiny_ckpt):
    tower = tiny_ckpt / "siglip-tiny"
    cases = {
        "absolute": str(tower),
        "basename": "/data/models/siglip-tiny",
        "relative": "siglip-tiny",
    }
    for name, value in cases.items():
        src = _clone(tiny_ckpt, tmp_path / f"src-{name}")
        _set_config(src, mm_vision_tower=value)
        result = conv.convert_checkpoint(
            src, tmp_path / f"dst-{name}", log=lambda _: None
        )
        assert result.vision_source == "directory", name
        assert result.config["vision_config"]["num_attention_heads"] == 2


def test_missing_tower_is_derived_from_the_weights(tmp_path, tiny_ckpt, capsys):
    src = _clone(tiny_ckpt, tmp_path / "src")
    shutil.rmtree(src / "siglip-tiny")
    _set_config(src, mm_vision_tower="/data/models/siglip-so400m-patch14-384")
    tower_config = json.loads((tiny_ckpt / "siglip-tiny" / "config.json").read_text())

    assert tools_main(["convert", str(src), str(tmp_path / "derived")]) == 0
    out = capsys.readouterr().out
    assert "not found" in out and "num_attention_heads=1" in out
    assert "so400m" in out
    derived = json.loads((tmp_path / "derived" / "config.json").read_text())
    vision = derived["vision_config"]
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "image_size"):
        assert vision[key] == tower_config[key], key
    assert vision["patch_size"] == 14 and vision["num_attention_heads"] == 1
    info = derived["quicksviewer_conversion"]
    assert info["vision_config_source"] == "weights" and info["assumptions"]
    preprocessor = json.loads(
        (tmp_path / "derived" / "preprocessor_config.json").read_text()
    )
    assert preprocessor == conv.so400m_preprocessor(384)

    flag = ["--vision-tower", str(tiny_ckpt / "siglip-tiny")]
    assert tools_main(["convert", str(src), str(tmp_path / "flag"), *flag]) == 0
    with_flag = json.loads((tmp_path / "flag" / "config.json").read_text())
    assert with_flag["vision_config"]["num_attention_heads"] == 2
    assert with_flag["quicksviewer_conversion"]["vision_config_source"] == "directory"


def test_full_siglip_config_and_mismatched_tower(tmp_path, tiny_ckpt):
    """A google/siglip-style directory (text + vision config) works; a tower whose
    shapes disagree with the checkpoint is refused."""
    tower_config = json.loads((tiny_ckpt / "siglip-tiny" / "config.json").read_text())
    full = tmp_path / "siglip-full"
    full.mkdir()
    vision = {k: v for k, v in tower_config.items() if k != "architectures"}
    (full / "config.json").write_text(
        json.dumps({"model_type": "siglip", "text_config": {}, "vision_config": vision})
    )
    result = conv.convert_checkpoint(
        tiny_ckpt, tmp_path / "dst", vision_tower=full, log=lambda _: None
    )
    assert result.config["vision_config"]["hidden_size"] == 64
    assert any("preprocessor_config.json missing" in a for a in result.assumptions)

    wrong = tmp_path / "siglip-wrong"
    wrong.mkdir()
    (wrong / "config.json").write_text(json.dumps({**vision, "num_hidden_layers": 3}))
    with pytest.raises(conv.ConvertError, match="does not match the checkpoint"):
        conv.convert_checkpoint(tiny_ckpt, tmp_path / "dst2", vision_tower=wrong)


def test_marker_less_tokenizer_is_refused(tmp_path, tiny_ckpt, base_tokenizer_dir):
    src = _clone(tiny_ckpt, tmp_path / "src")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (src / name).unlink()
        shutil.copy(base_tokenizer_dir / name, src / name)
    with pytest.raises(conv.ConvertError, match="no <patch_start> token"):
        conv.convert_checkpoint(src, tmp_path / "dst", log=lambda _: None)
