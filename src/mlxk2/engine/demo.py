"""Build a small, valid MLX chat model offline, with random weights.

The demo model lets a fresh machine exercise ``list``, ``show``, ``run`` and
``serve`` without a download, and gives the test suite real models to generate
with. Everything is deterministic for a given preset and seed: the tokenizer is
a byte-level BPE trained on ``data/corpus.txt`` (shipped with the package) and
the weights come from MLX's seeded initialisers.
"""

from __future__ import annotations

import contextlib
import io
import json
from importlib import resources
from pathlib import Path
from typing import Any

#: Architecture sizes per preset. ``mid`` lands at about 130M parameters.
PRESETS: dict[str, dict[str, int]] = {
    "tiny": {
        "hidden_size": 128,
        "num_hidden_layers": 2,
        "intermediate_size": 256,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 2048,
    },
    "mid": {
        "hidden_size": 1024,
        "num_hidden_layers": 12,
        "intermediate_size": 2816,
        "num_attention_heads": 16,
        "num_key_value_heads": 4,
        "max_position_embeddings": 4096,
    },
}

VOCAB_SIZE = 1024
EOS_TOKEN = "<|endoftext|>"
TURN_START = "<|im_start|>"
TURN_END = "<|im_end|>"
SPECIAL_TOKENS = (EOS_TOKEN, TURN_START, TURN_END)

#: ChatML, as used by Qwen-style chat models.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_DTYPES = ("bfloat16", "float16", "float32")
#: mlx-lm architectures the builder can make: llama (tensor parallel in mlx-lm)
#: and qwen2 (tensor and pipeline parallel), as ``model_type`` -> ``architectures``.
ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}


def corpus_text() -> str:
    """The shipped training text for the demo tokenizer."""
    return resources.files("mlxk2.engine").joinpath("data/corpus.txt").read_text("utf-8")


def _train_tokenizer() -> Any:
    """Train the byte-level BPE tokenizer; the same input always gives the same merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus_text().splitlines(keepends=True), trainer)
    return tokenizer


def _readable_ids(tokenizer: Any) -> list[bool]:
    """Per token id: does it decode to whole printable text (or a stop token)?"""
    keep = []
    for token_id in range(tokenizer.get_vocab_size()):
        text = tokenizer.decode([token_id], skip_special_tokens=False)
        readable = "\ufffd" not in text and all(c.isprintable() or c == "\n" for c in text)
        keep.append(readable and text != TURN_START)
    return keep


def _write_tokenizer(dest: Path, *, chat_template: bool, context_length: int) -> dict[str, Any]:
    """Write tokenizer.json and a classic tokenizer_config.json.

    Returns:
        The special token ids, ``vocab_size`` and ``readable`` (see :func:`_readable_ids`).
    """
    tokenizer = _train_tokenizer()
    tokenizer.save(str(dest / "tokenizer.json"))
    ids = {tok: tokenizer.token_to_id(tok) for tok in SPECIAL_TOKENS}
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": context_length,
        "bos_token": None,
        "eos_token": EOS_TOKEN,
        "pad_token": EOS_TOKEN,
        "unk_token": None,
        "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": {
            str(ids[tok]): {
                "content": tok,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
            for tok in SPECIAL_TOKENS
        },
    }
    if chat_template:
        config["chat_template"] = CHAT_TEMPLATE
    (dest / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    special_map = {"eos_token": EOS_TOKEN, "pad_token": EOS_TOKEN}
    (dest / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n")
    return {**ids, "vocab_size": tokenizer.get_vocab_size(), "readable": _readable_ids(tokenizer)}


def _model_card(preset: str, quantize_bits: int | None, chat_template: bool) -> str:
    kind = "chat" if chat_template else "base"
    quant = f", {quantize_bits}-bit" if quantize_bits else ""
    return (
        "---\nlibrary_name: mlx\ntags:\n- mlx\n- mlxk2-demo\npipeline_tag: text-generation\n---\n"
        f"# mlxk2 demo model ({preset}, {kind}{quant})\n\n"
        "Random weights, built offline by `mlxk2 demo`. It produces fluent-looking noise;\n"
        "it exists to exercise the tooling end to end, not to answer questions.\n"
    )


def build_demo_model(
    dest: Path,
    *,
    preset: str = "tiny",
    quantize_bits: int | None = None,
    dtype: str = "bfloat16",
    seed: int = 0,
    chat_template: bool = True,
    architecture: str = "llama",
) -> Path:
    """Write a llama-architecture (or qwen2) MLX model with random weights into ``dest``.

    Args:
        dest: Target folder; created if missing. Existing files are overwritten.
        preset: ``"tiny"`` (under 1M parameters, for tests) or ``"mid"`` (~130M, benchmarks).
        quantize_bits: Quantise the weights with mlx-lm (group size 64) when given.
        dtype: Parameter dtype before quantisation.
        seed: Seed for MLX's initialisers, so the same arguments give the same weights.
        chat_template: Include a ChatML template (a chat model) or not (a base model).
        architecture: A key of :data:`ARCHITECTURES`.

    Returns:
        ``dest``.

    Raises:
        ValueError: For an unknown preset, dtype, bit width or architecture.
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; "
                         f"choose from {', '.join(ARCHITECTURES)}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {', '.join(_DTYPES)}")
    if quantize_bits is not None and quantize_bits not in (2, 3, 4, 6, 8):
        raise ValueError(f"unsupported quantisation width {quantize_bits}")

    import mlx.core as mx
    from mlx_lm.utils import _get_classes, quantize_model, save_config, save_model

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    sizes = PRESETS[preset]
    ids = _write_tokenizer(
        dest, chat_template=chat_template, context_length=sizes["max_position_embeddings"]
    )
    eos_ids = [ids[EOS_TOKEN], ids[TURN_END]] if chat_template else [ids[EOS_TOKEN]]
    config: dict[str, Any] = {
        "model_type": architecture,
        "architectures": [ARCHITECTURES[architecture]],
        **sizes,
        "vocab_size": ids["vocab_size"],
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": None,
        "eos_token_id": eos_ids,
        "torch_dtype": dtype,
    }

    mx.random.seed(seed)
    model_cls, args_cls = _get_classes(config)
    model = model_cls(args_cls.from_dict(config))
    # Zeroed output rows never win the argmax against random positive logits, so
    # greedy output stays readable text instead of stray bytes.
    mask = mx.array(ids["readable"], dtype=mx.float32)[:, None]
    model.lm_head.weight = model.lm_head.weight * mask
    model.set_dtype(getattr(mx, dtype))
    if quantize_bits is not None:
        with contextlib.redirect_stdout(io.StringIO()):  # mlx-lm prints a summary
            model, config = quantize_model(model, config, 64, quantize_bits)
    mx.eval(model.parameters())
    save_model(dest, model)
    save_config(config, dest / "config.json")
    (dest / "README.md").write_text(_model_card(preset, quantize_bits, chat_template))
    return dest


#: The demo embedding model: a 2-layer BERT in the sentence-transformers layout.
EMBED_SIZES = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
               "intermediate_size": 128, "max_position_embeddings": 512}
EMBED_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def build_demo_embedding_model(dest: Path, *, seed: int = 0) -> Path:
    """Write a tiny random-weight BERT encoder with mean pooling and Normalize into ``dest``.

    The WordPiece tokenizer is trained on the shipped corpus, the weights come
    from MLX's seeded initialisers, and the files follow the sentence-transformers
    layout (``modules.json``, ``1_Pooling``, ``2_Normalize``) with Hugging Face
    weight names, as a real encoder repo has them.
    """
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    from mlxk2.engine.embed import BertModel, EncoderArgs, hf_weight_name

    dest = Path(dest)
    (dest / "1_Pooling").mkdir(parents=True, exist_ok=True)
    (dest / "2_Normalize").mkdir(exist_ok=True)
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=VOCAB_SIZE, show_progress=False,
                                        special_tokens=list(EMBED_SPECIAL_TOKENS))
    tokenizer.train_from_iterator(corpus_text().splitlines(), trainer)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    tokenizer.save(str(dest / "tokenizer.json"))
    config = {"model_type": "bert", "architectures": ["BertModel"], **EMBED_SIZES,
              "vocab_size": tokenizer.get_vocab_size(), "type_vocab_size": 2,
              "layer_norm_eps": 1e-12, "hidden_act": "gelu", "pad_token_id": 0,
              "torch_dtype": "float32"}
    mx.random.seed(seed)
    model = BertModel(EncoderArgs.from_config(config))
    flat = tree_flatten(model.parameters())
    assert isinstance(flat, list)  # a module's parameters flatten to (name, array) pairs
    weights = {hf_weight_name(k): v for k, v in flat}
    mx.save_safetensors(str(dest / "model.safetensors"), weights, metadata={"format": "pt"})
    files: dict[str, Any] = {
        "config.json": config,
        "tokenizer_config.json": {"tokenizer_class": "BertTokenizer", "do_lower_case": True,
                                  "model_max_length": 128},
        "modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling",
             "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize",
             "type": "sentence_transformers.models.Normalize"},
        ],
        "1_Pooling/config.json": {"word_embedding_dimension": EMBED_SIZES["hidden_size"],
                                  "pooling_mode_mean_tokens": True},
        "sentence_bert_config.json": {"max_seq_length": 128, "do_lower_case": False},
    }
    for name, content in files.items():
        (dest / name).write_text(json.dumps(content, indent=2) + "\n")
    (dest / "README.md").write_text(
        "---\nlibrary_name: sentence-transformers\ntags:\n- mlxk2-demo\n"
        "pipeline_tag: sentence-similarity\n---\n# mlxk2 demo embedding model\n\n"
        "Random weights, built offline by `mlxk2 demo --embedding`; its vectors carry no "
        "meaning.\n")
    return dest
