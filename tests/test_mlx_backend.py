"""MlxBackend against a real (tiny, random-weight) PaliGemma model on CPU, plus jsonrepair unit tests.

No network, no downloaded weights: the model is built by tests.support.tiny_vlm in a second or so.
Random weights write gibberish, so the valid-JSON path forces tokens with a logits processor.
"""
from __future__ import annotations

import os

os.environ["MLX_DISABLE_COMPILE"] = "1"  # before mlx is imported anywhere: no g++ JIT on first generate
os.environ["HF_HUB_OFFLINE"] = "1"

import asyncio
import io
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enrich.backends.base import Backend, DescribeRequest, MediaPart
from enrich.backends.jsonrepair import InvalidOutput, parse_or_repair, repair_json_text, schema_prompt
from enrich.errors import FatalRunError, ItemRequestError, MediaError
from enrich.schemas.descriptions import ImageDescription
from tests.support import StopAfter, force_text, tiny_vlm_dir

GOOD = ImageDescription(
    caption="A red square.",
    description="A plain red square on a white ground. Nothing else is visible.",
    tags=["red", "square"],
    objects=["square"],
    visible_text="",
    people_count=0,
    setting="unknown",
)
GOOD_JSON = GOOD.model_dump_json()


# --------------------------------------------------------------------------------------------- jsonrepair


def test_schema_prompt_is_short_and_names_every_field():
    text = schema_prompt(ImageDescription)
    for name in ImageDescription.model_fields:
        assert f'"{name}"' in text
    assert '"indoor", "outdoor", "mixed", "unknown"' in text
    assert "list of strings" in text and "integer" in text
    assert len(text) < 700  # ~100-150 tokens with a real tokenizer


@pytest.mark.parametrize(
    "text",
    [
        GOOD_JSON,
        f"Here you go:\n```json\n{GOOD_JSON}\n```\nHope this helps!",
        f"```\n{GOOD_JSON}",  # unclosed fence
        GOOD_JSON[:-1],  # missing closing brace
        GOOD_JSON.replace('"square"]', '"square",]').replace('"unknown"}', '"unknown",}'),  # trailing commas
        GOOD_JSON.replace('"', "'"),  # single quotes everywhere
        GOOD_JSON.replace('"people_count":0', '"people_count":"0"'),  # lax: numeric string
        GOOD_JSON.replace('"unknown"', '" Unknown "'),  # enum differing in case/space
        GOOD_JSON.replace('"visible_text":""', '"visible_text":null'),  # null for an "or empty" string
        GOOD_JSON.replace('"visible_text":""', '"visible_text":None'),  # Python literal
        "{caption: 'A red square.', " + GOOD_JSON[GOOD_JSON.index('"description"'):],  # unquoted key
        "I think {this} is it: " + GOOD_JSON + " and {more}",  # braces in prose on both sides
        GOOD_JSON.replace(',"tags"', ', // the tags\n"tags"'),  # a comment
    ],
)
def test_parse_or_repair_accepts_common_slips(text):
    assert parse_or_repair(text, ImageDescription) == GOOD


def test_parse_or_repair_closes_a_truncated_tail_when_the_fields_are_there():
    extra = GOOD_JSON[:-1] + ', "note": "cut in the midd'
    assert parse_or_repair(extra, ImageDescription) == GOOD


@pytest.mark.parametrize(
    "text",
    ["", "cacacaca<bos>o pa", "{}", '{"caption": "a", "description": "b"', GOOD_JSON.replace('"unknown"', '"space"')],
)
def test_parse_or_repair_raises_invalid_output_with_raw_text(text):
    with pytest.raises(InvalidOutput) as info:
        parse_or_repair(text, ImageDescription)
    assert isinstance(info.value, ValueError)
    assert info.value.raw_text == text


def test_repair_json_text_escapes_and_closes():
    fixed, cuts = repair_json_text("{'a': 'it\\'s \"x\"\nline', 'b': [1, 2,")
    assert json.loads(fixed) == {"a": "it's \"x\"\nline", "b": [1, 2]}
    assert cuts  # comma positions for cutting a truncated tail


_texts = st.text(max_size=40)
_descriptions = st.builds(
    ImageDescription,
    caption=_texts,
    description=_texts,
    tags=st.lists(_texts, max_size=5),
    objects=st.lists(_texts, max_size=5),
    visible_text=_texts,
    # Every count the schema allows (0..100,000): a negative or huge one is an invalid answer, tested elsewhere.
    people_count=st.integers(min_value=0, max_value=100_000),
    setting=st.sampled_from(["indoor", "outdoor", "mixed", "unknown"]),
)
_prose = st.text(alphabet=st.characters(blacklist_characters="`"), max_size=60)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(desc=_descriptions, before=_prose, after=_prose, fence=st.sampled_from(["", "```", "```json"]),
       indent=st.sampled_from([None, 2]))
def test_any_description_wrapped_in_prose_or_fences_parses_back_equal(desc, before, after, fence, indent):
    body = desc.model_dump_json(indent=indent)
    if fence:
        body = f"{fence}\n{body}\n```"
    text = f"{before}\n{body}\n{after}"
    assert parse_or_repair(text, ImageDescription) == desc


# --------------------------------------------------------------------------------------------- the backend


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory):
    pytest.importorskip("mlx_vlm")
    return tiny_vlm_dir(tmp_path_factory)


def _jpeg(color=(200, 30, 30), size=(80, 60)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return buf.getvalue()


def _request(max_tokens=48, data=None, mime="image/jpeg", key="k1") -> DescribeRequest:
    return DescribeRequest(
        key=key,
        prompt="Describe the image.",
        schema=ImageDescription,
        media=(MediaPart(mime=mime, data=_jpeg() if data is None else data),),
        max_output_tokens=max_tokens,
    )


def _run(coro):
    return asyncio.run(coro)


def test_backend_shape(tiny_vlm):
    from enrich.backends.mlx_local import MlxBackend

    b = MlxBackend(tiny_vlm)
    assert isinstance(b, Backend)
    assert b.name == "mlx" and b.model == f"mlx:{tiny_vlm}"
    assert MlxBackend(f"mlx:{tiny_vlm}").model == b.model
    caps = b.capabilities
    assert caps.local and caps.default_concurrency == 1 and not caps.structured_output
    assert caps.mime_types == {"image/jpeg", "image/png", "image/webp"}


def test_model_is_loaded_once_per_process(tiny_vlm):
    from enrich.backends.mlx_local import MlxBackend

    a, b = MlxBackend(tiny_vlm), MlxBackend(str(tiny_vlm) + "/")
    _run(a.preflight())
    assert _run(a.load()) is _run(b.load())


def test_preflight_of_a_missing_model_is_fatal(tmp_path):
    pytest.importorskip("mlx_vlm")
    from enrich.backends.mlx_local import MlxBackend

    with pytest.raises(FatalRunError):
        _run(MlxBackend(tmp_path / "no-such-model").preflight())


def test_random_weights_run_to_max_tokens(tiny_vlm):
    from enrich.backends.mlx_local import MlxBackend

    r = _run(MlxBackend(tiny_vlm).describe(_request(max_tokens=24)))
    assert r.status == "error" and r.error_kind == "max_tokens" and r.finish_reason == "length"
    assert r.raw_text  # the gibberish is kept
    assert r.description is None
    assert r.usage.output_tokens == 24
    assert r.usage.input_tokens > 16  # 16 image tokens + prompt + schema instructions
    assert r.usage.input_by_modality["IMAGE"] == 16
    assert r.extra["attempts"] == 1  # a cut answer is not retried


def test_gibberish_that_stops_is_invalid_output_after_one_retry(tiny_vlm):
    from enrich.backends.mlx_local import MlxBackend

    r = _run(MlxBackend(tiny_vlm, logits_processors=[StopAfter(6)]).describe(_request()))
    assert r.status == "error" and r.error_kind == "invalid_output" and r.finish_reason == "stop"
    assert r.raw_text and r.error
    assert r.extra["attempts"] == 2
    # both attempts are counted: 6 model tokens + EOS each; the retry prompt is longer
    assert r.usage.output_tokens == 2 * 7
    single = _run(MlxBackend(tiny_vlm, logits_processors=[StopAfter(6)], retry_invalid=False).describe(_request()))
    assert single.extra["attempts"] == 1
    assert r.usage.input_tokens > 2 * single.usage.input_tokens


def test_forced_valid_json_is_ok(tiny_vlm):
    from enrich.backends.mlx_local import MlxBackend

    forced = force_text(tiny_vlm, GOOD_JSON)
    r = _run(MlxBackend(tiny_vlm, logits_processors=[forced]).describe(_request(max_tokens=200)))
    assert r.status == "ok", r.error
    assert r.description == GOOD
    assert r.finish_reason == "stop" and r.error_kind is None and r.raw_text is None
    assert r.usage.output_tokens == len(forced.target) + 1  # + EOS
    assert r.usage.input_tokens > 16
    assert r.model_version == f"mlx:{tiny_vlm}"
    assert r.extra["tokens_per_second"] > 0
    assert r.extra["peak_memory_mb"] > 0
    assert r.extra["wall_ms"] > 0
    assert r.extra["attempts"] == 1


def test_forced_json_with_slips_is_repaired(tiny_vlm):
    from enrich.backends.mlx_local import MlxBackend

    sloppy = "Sure!\n```json\n" + GOOD_JSON.replace('"square"]', "'square',]") + "\n```"
    r = _run(MlxBackend(tiny_vlm, logits_processors=[force_text(tiny_vlm, sloppy)]).describe(_request(200)))
    assert r.status == "ok" and r.description == GOOD


def test_forced_json_cut_by_max_tokens(tiny_vlm):
    from enrich.backends.mlx_local import MlxBackend

    r = _run(MlxBackend(tiny_vlm, logits_processors=[force_text(tiny_vlm, GOOD_JSON)]).describe(_request(10)))
    assert r.status == "error" and r.error_kind == "max_tokens"
    assert r.raw_text.startswith('{"caption"')
    assert r.usage.output_tokens == 10


def test_png_and_webp_are_accepted(tiny_vlm):
    from PIL import Image

    from enrich.backends.mlx_local import MlxBackend

    backend = MlxBackend(tiny_vlm, logits_processors=[force_text(tiny_vlm, GOOD_JSON)])
    for fmt, mime in (("PNG", "image/png"), ("WEBP", "image/webp")):
        buf = io.BytesIO()
        Image.new("RGBA", (30, 90), (0, 0, 255, 128)).save(buf, fmt)
        r = _run(backend.describe(_request(200, data=buf.getvalue(), mime=mime)))
        assert r.status == "ok", (mime, r.error)


def test_bad_media(tiny_vlm):
    from enrich.backends.mlx_local import MlxBackend

    b = MlxBackend(tiny_vlm)
    with pytest.raises(MediaError):
        _run(b.describe(_request(data=b"not an image")))
    with pytest.raises(ItemRequestError):
        _run(b.describe(_request(mime="audio/mpeg")))


def test_concurrent_describes_are_serialised_and_all_answer(tiny_vlm):
    from enrich.backends.mlx_local import MlxBackend

    b = MlxBackend(tiny_vlm, logits_processors=[force_text(tiny_vlm, GOOD_JSON)])

    async def many():
        return await asyncio.gather(*(b.describe(_request(200, key=f"k{i}")) for i in range(4)))

    assert [r.status for r in _run(many())] == ["ok"] * 4


def test_describe_many(tiny_vlm):
    from enrich.backends.mlx_local import MlxBackend

    forced = force_text(tiny_vlm, GOOD_JSON)
    reqs = [_request(200, key="a"), _request(10, key="b"), _request(200, data=_jpeg((0, 0, 255)), key="c")]
    # PaliGemma: falls back to one generate per item (see the next test)
    safe = _run(MlxBackend(tiny_vlm, logits_processors=[forced]).describe_many(reqs))
    # batch_generate itself, forced anyway
    batched = _run(MlxBackend(tiny_vlm, logits_processors=[forced], force_batch=True).describe_many(reqs))
    for results in (safe, batched):
        assert [r.status for r in results] == ["ok", "error", "ok"]
        assert results[1].error_kind == "max_tokens" and results[1].usage.output_tokens == 10
        assert results[0].description == GOOD
        assert results[0].usage.output_tokens == len(forced.target) + 1
        assert results[0].usage.input_tokens == safe[0].usage.input_tokens
    assert batched[0].extra["batch_size"] == 3 and "batch_size" not in safe[0].extra


def test_mlx_vlm_paligemma_batch_still_uses_only_the_first_image(tiny_vlm):
    """Upstream bug in mlx-vlm 0.7.10: PaliGemma's vision encoder keeps x[0] of the batch, so every row
    of a batch_generate sees the first image. If this fails, upstream fixed it: drop "paligemma" from
    enrich.backends.mlx_local.BATCH_BROKEN_MODEL_TYPES."""
    import mlx_vlm
    from PIL import Image

    from enrich.backends.mlx_local import load_model

    loaded = load_model(str(tiny_vlm))
    images = [Image.new("RGB", (80, 60), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]]
    prompt = mlx_vlm.apply_chat_template(loaded.processor, loaded.config, "Describe the image.", num_images=1)
    single = [
        mlx_vlm.generate(loaded.model, loaded.processor, prompt, image=im, max_tokens=12, temperature=0).text
        for im in images
    ]
    assert len(set(single)) > 1  # different images do give different texts one at a time
    batched = mlx_vlm.batch_generate(
        loaded.model, loaded.processor, images=images, prompts=["Describe the image."] * 4, max_tokens=12
    ).texts
    assert batched == [single[0]] * 4


def test_tiny_model_is_deterministic_small_and_cached(tiny_vlm, tmp_path):
    from tests.support.tiny_vlm import build_tiny_vlm

    other = build_tiny_vlm(tmp_path / "again")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (other / name).read_bytes() == (tiny_vlm / name).read_bytes()
    assert sum(f.stat().st_size for f in other.iterdir()) < 1_000_000
    stamp = (other / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_vlm(other) == other
    assert (other / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not rebuilt


_EXIT_SCRIPT = """
import asyncio, io, sys
from PIL import Image
from enrich.backends.base import DescribeRequest, MediaPart
from enrich.backends.mlx_local import MlxBackend
from enrich.schemas.descriptions import ImageDescription
buf = io.BytesIO(); Image.new("RGB", (64, 48), (1, 2, 3)).save(buf, "JPEG")
req = DescribeRequest(key="k", prompt="Describe.", schema=ImageDescription,
                      media=(MediaPart("image/jpeg", buf.getvalue()),), max_output_tokens=8)
b = MlxBackend(sys.argv[1])
print(asyncio.run(b.describe(req)).status, b.describe_sync(req).status)
"""


def test_process_exits_cleanly_after_describing(tiny_vlm):
    """mlx aborts the process at exit when a thread that generated exits without clearing its streams
    (it did ~9 runs in 10 with asyncio.to_thread); the backend's single mlx thread avoids that."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root))
    proc = subprocess.run([sys.executable, "-c", _EXIT_SCRIPT, str(tiny_vlm)], capture_output=True, text=True,
                          cwd=root, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["error", "error"]


def test_every_mlx_call_runs_on_the_one_mlx_thread(tiny_vlm):
    import threading

    from enrich.backends.mlx_local import MlxBackend

    seen: set[str] = set()

    def spy(tokens, logits):
        seen.add(threading.current_thread().name)
        return logits

    b = MlxBackend(tiny_vlm, logits_processors=[spy], force_batch=True)
    _run(b.describe(_request(4)))
    _run(b.describe_many([_request(4), _request(4)]))
    b.describe_sync(_request(4))
    assert seen == {"enrich-mlx"}
