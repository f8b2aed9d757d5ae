"""A tiny random-weight PaliGemma model for offline tests (about 0.5 MB, built in well under a second).

`build_tiny_vlm(dest)` writes a directory that `mlx_vlm.load(str(dest))` and
`python -m mlx_vlm.server --model dest` accept, without touching the network:

- a ByteLevel BPE tokenizer (vocab 400) trained with `tokenizers` on fixed sentences (JSON punctuation,
  caption/description/tags..., all printable ASCII), special tokens `<pad>`, `<bos>`, `<eos>`, `<image>`
  at ids 0-3; text outside printable ASCII is not representable (tests use ASCII);
- config.json (siglip vision 56px / patch 14 -> 16 image tokens; gemma text, hidden 64, 2 layers);
- preprocessor_config.json / processor_config.json (SiglipImageProcessor, 56x56);
- model.safetensors from the model class mlx-vlm itself resolves for the config, seeded, with the token
  embeddings re-drawn at std 0.02 (otherwise the random model repeats one token forever).

The output text is random; tests assert structure and counts, or force tokens with a logits processor.
Everything is deterministic: same seeds, same files. A complete directory is reused as is.
"""
from __future__ import annotations

import json
import os
import string
import tempfile
from pathlib import Path

VOCAB_SIZE = 400
SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "<image>"]  # ids 0..3
IMAGE_SIZE = 56
PATCH_SIZE = 14
IMAGE_SEQ_LENGTH = (IMAGE_SIZE // PATCH_SIZE) ** 2  # 16
SEED = 1234
# Bump when the layout changes so a stale cached directory is rebuilt.
FORMAT_VERSION = 2

_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
    "processor_config.json",
    "model.safetensors",
)
_MARKER = ".tiny_vlm_complete"

_CORPUS = [
    'Return JSON only: {"caption": "a dog on a beach", "description": "A brown dog runs on the sand."}',
    '{"tags": ["dog", "beach", "sea"], "objects": ["dog", "ball"], "visible_text": "", "people_count": 0}',
    '{"setting": "outdoor"} {"setting": "indoor"} {"setting": "mixed"} {"setting": "unknown"}',
    "Describe the image. Give a caption, a description, tags, objects, visible text and people count.",
    "caption description tags objects visible_text people_count setting indoor outdoor mixed unknown",
    "A red car is parked in front of a white house. Two people walk past a shop window at night.",
    "string integer array list of strings one of true false null 0 1 2 3 4 5 6 7 8 9 10",
    "[ ] { } , : \" ' ` ``` json JSON Output only valid JSON matching the fields below.",
    "The photo shows a cat sleeping on a sofa indoors, with a lamp and a book on the table.",
    "a small boat on a lake under a cloudy sky; trees, mountains and a wooden pier in the distance.",
    "Line one.\nLine two.\n\tIndented; done.\n",
    string.printable,  # every printable ASCII character has a token
]


def _is_complete(dest: Path) -> bool:
    marker = dest / _MARKER
    if not marker.is_file() or marker.read_text().strip() != str(FORMAT_VERSION):
        return False
    return all((dest / name).is_file() for name in _FILES)


def _train_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # No byte alphabet: only the ASCII seen in the corpus gets tokens, so whatever the random model
    # samples decodes to visible text (a lone byte of a multi-byte character decodes to nothing).
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=SPECIAL_TOKENS, show_progress=False)
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    # BPE training is deterministic for a fixed corpus; the vocab may end a little below VOCAB_SIZE.
    assert tok.get_vocab_size() <= VOCAB_SIZE, tok.get_vocab_size()
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i, (t, tok.token_to_id(t))
    return tok


def _config() -> dict:
    return {
        "model_type": "paligemma",
        "architectures": ["PaliGemmaForConditionalGeneration"],
        "hidden_size": 64,
        "projection_dim": 64,
        "vocab_size": VOCAB_SIZE,
        "image_token_index": 3,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "text_config": {
            "model_type": "gemma",
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "intermediate_size": 128,
            "num_attention_heads": 4,
            "num_key_value_heads": 1,
            "head_dim": 16,
            "vocab_size": VOCAB_SIZE,
            "num_image_tokens": IMAGE_SEQ_LENGTH,
            "max_position_embeddings": 1024,
        },
        "vision_config": {
            "model_type": "siglip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "patch_size": PATCH_SIZE,
            "image_size": IMAGE_SIZE,
            "projection_dim": 64,
            "num_channels": 3,
        },
    }


def _write_weights(dest: Path, config: dict) -> None:
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_vlm.utils import get_model_and_args

    mx.random.seed(SEED)
    arch, _ = get_model_and_args(config=json.loads(json.dumps(config)))
    model_config = arch.ModelConfig.from_dict(json.loads(json.dumps(config)))
    model = arch.Model(model_config)
    weights = dict(tree_flatten(model.parameters()))
    key = "language_model.model.embed_tokens.weight"
    assert key in weights, sorted(weights)[:10]
    weights[key] = mx.random.normal(weights[key].shape, key=mx.random.key(SEED + 1)) * 0.02
    weights = {k: v.astype(mx.float32) for k, v in weights.items()}
    mx.eval(weights)
    mx.save_safetensors(str(dest / "model.safetensors"), weights, metadata={"format": "mlx"})


def _write_files(dest: Path) -> None:
    tok = _train_tokenizer()
    tok.save(str(dest / "tokenizer.json"))
    (dest / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "pad_token": "<pad>",
                "bos_token": "<bos>",
                "eos_token": "<eos>",
                "model_max_length": 1024,
                "add_bos_token": False,
                "add_eos_token": False,
            },
            indent=1,
        )
    )
    (dest / "special_tokens_map.json").write_text(
        json.dumps({"pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<eos>"}, indent=1)
    )
    config = _config()
    (dest / "config.json").write_text(json.dumps(config, indent=1))
    (dest / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "SiglipImageProcessor",
                "processor_class": "PaliGemmaProcessor",
                "do_resize": True,
                "size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                "resample": 3,
                "do_rescale": True,
                "rescale_factor": 1 / 255,
                "do_normalize": True,
                "image_mean": [0.5, 0.5, 0.5],
                "image_std": [0.5, 0.5, 0.5],
                "do_convert_rgb": True,
                "image_seq_length": IMAGE_SEQ_LENGTH,
            },
            indent=1,
        )
    )
    (dest / "processor_config.json").write_text(
        json.dumps({"processor_class": "PaliGemmaProcessor", "image_seq_length": IMAGE_SEQ_LENGTH}, indent=1)
    )
    _write_weights(dest, config)


def build_tiny_vlm(dest: Path) -> Path:
    """Build (or reuse) the tiny model in `dest` and return `dest`.

    Built in a sibling temporary directory and renamed into place, so a concurrent or interrupted build
    never leaves a half-written model that looks complete.
    """
    dest = Path(dest)
    if _is_complete(dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".build-", dir=dest.parent))
    try:
        _write_files(tmp)
        (tmp / _MARKER).write_text(str(FORMAT_VERSION))
        if dest.exists():
            if _is_complete(dest):  # another process finished first
                return dest
            import shutil

            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return dest


class ForceTokens:
    """A stateless mlx logits processor that makes the model emit `token_ids`, then `eos_id`, forever.

    Stateless: the position is the longest suffix of the context that is a prefix of the target, so the
    same instance works across calls, retries and batch rows (the context may start with the prompt; the
    prompt must not end with a prefix of the target, which holds for a JSON target after the newline
    that ends every PaliGemma prompt).
    """

    def __init__(self, token_ids: list[int], eos_id: int = 2) -> None:
        self.target = [int(t) for t in token_ids]
        self.eos_id = int(eos_id)

    def clone(self) -> "ForceTokens":
        return self

    def next_token(self, context: list[int]) -> int:
        t = self.target
        for k in range(min(len(t), len(context)), 0, -1):
            if context[-k:] == t[:k]:
                return t[k] if k < len(t) else self.eos_id
        return t[0] if t else self.eos_id

    def __call__(self, tokens, logits):
        import mlx.core as mx

        context = tokens.reshape(-1).tolist() if hasattr(tokens, "reshape") else list(tokens)
        nxt = self.next_token(context)
        vocab = logits.shape[-1]
        mask = mx.arange(vocab) == nxt
        forced = mx.where(mask, mx.array(100.0, dtype=logits.dtype), mx.array(-1e9, dtype=logits.dtype))
        return mx.broadcast_to(forced, logits.shape)


class StopAfter:
    """An mlx logits processor that lets the model write `n` tokens of its own, then forces `eos_id`.

    With random weights this gives gibberish that ends with a normal stop (finish_reason "stop"), not a
    max-tokens cut. It notices a new generation when the context does not grow by exactly one token, so
    one instance serves several sequential generations (not batch rows)."""

    def __init__(self, n: int, eos_id: int = 2) -> None:
        self.n = n
        self.eos_id = eos_id
        self._start: int | None = None
        self._last: int | None = None

    def __call__(self, tokens, logits):
        import mlx.core as mx

        length = int(tokens.size)
        if self._last is None or length != self._last + 1:
            self._start = length
        self._last = length
        if length - self._start < self.n:
            return logits
        mask = mx.arange(logits.shape[-1]) == self.eos_id
        forced = mx.where(mask, mx.array(100.0, dtype=logits.dtype), mx.array(-1e9, dtype=logits.dtype))
        return mx.broadcast_to(forced, logits.shape)


def force_text(model_dir: Path, text: str) -> ForceTokens:
    """A ForceTokens processor for `text`, tokenized with the tiny model's own tokenizer."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    ids = tok.encode(text, add_special_tokens=False).ids
    assert tok.decode(ids) == text, "text does not round-trip through the tokenizer"
    return ForceTokens(ids, eos_id=tok.token_to_id("<eos>"))


if __name__ == "__main__":  # python -m tests.support.tiny_vlm DEST
    import sys

    print(build_tiny_vlm(Path(sys.argv[1] if len(sys.argv) > 1 else "tiny-vlm")))
