"""What the prompt and the response schema cost per request, for each built-in profile, and the seed's table.

1. For every built-in profile and media kind: the input tokens of prompt + schema exactly as the Gemini
   backend sends them (text part + `responseJsonSchema`), counted by the emulator's `countTokens`, next to
   enrich's own prediction (enrich/tokens.py prompt_tokens). Targets: caption and alt-text <= 80,
   detailed <= 120.
2. `enrich estimate` over N photos (default 68,000: hard links to one 1600x1200 JPEG, so the scan reads
   real files) with the `caption` profile, priced as Gemini 1.5 Flash-8B: within 1.25x of the $1.68 that
   made the case for the project (260 input + 100 output tokens per photo).
3. What each built-in profile costs per 1,000 photos on the default model (the README's table).

    python benchmarks/bench_prompt_overhead.py [--photos 68000]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LIMITS = {"caption": 80, "alt-text": 80, "detailed": 120}
SEED_USD = 1.68


def count_tokens(base_url: str, model: str, prompt: str, schema: dict) -> int:
    body = {"generateContentRequest": {
        "model": f"models/{model}",
        "contents": [{"role": "user", "parts": [{"text": prompt}]}],
        "generationConfig": {"responseMimeType": "application/json", "responseJsonSchema": schema}}}
    req = urllib.request.Request(f"{base_url}/v1beta/models/{model}:countTokens", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", "x-goog-api-key": "bench"})
    with urllib.request.urlopen(req) as resp:
        return int(json.loads(resp.read())["totalTokens"])


def overhead_table(model: str) -> bool:
    from enrich.emulator import EmulatorConfig, GeminiEmulator
    from enrich.schemas.profiles import known_profiles
    from enrich.settings import load_settings
    from enrich.tokens import prompt_tokens, schema_json

    emu = GeminiEmulator(EmulatorConfig())
    url = emu.start()
    ok = True
    try:
        known = known_profiles(load_settings()).known
        print(f"prompt + schema input tokens per request (countTokens on the emulator, model {model})")
        print(f"  {'profile':<10} {'kind':<9} {'countTokens':>11} {'predicted':>9} {'limit':>6}")
        for name, profile in known.items():
            for kind in profile.kinds():
                counted = count_tokens(url, model, profile.prompts[kind], schema_json(profile.schemas[kind]))
                predicted = prompt_tokens(profile.prompts[kind], profile.schemas[kind])
                limit = LIMITS.get(name)
                flag = "" if limit is None or counted <= limit else "  OVER"
                ok &= limit is None or counted <= limit
                ok &= counted == predicted
                print(f"  {name:<10} {kind:<9} {counted:>11} {predicted:>9} {limit or '-':>6}{flag}")
    finally:
        emu.stop()
    return ok


def make_photos(folder: Path, n: int) -> None:
    """n photos in folders of 1,000: one JPEG per folder and hard links to it (a filesystem allows ~65,000
    links per file)."""
    import shutil

    from PIL import Image

    folder.mkdir(parents=True)
    base = folder / "base.jpg"
    Image.new("RGB", (1600, 1200), (90, 120, 160)).save(base, quality=80)
    first = None
    for i in range(n):
        if i % 1000 == 0:
            sub = folder / f"d{i // 1000:03d}"
            sub.mkdir()
            first = sub / f"p{i:06d}.jpg"
            shutil.copyfile(base, first)
            continue
        os.link(first, sub / f"p{i:06d}.jpg")
    base.unlink()


def estimate_cli(folder: Path, home: Path, *args: str) -> dict:
    env = dict(os.environ, ENRICH_HOME=str(home))
    env.pop("ENRICH_PROFILE", None)
    out = subprocess.run([sys.executable, "-m", "enrich", "estimate", str(folder), "--json", *args],
                         env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=68_000)
    args = ap.parse_args()
    from enrich.settings import load_settings

    default_model = load_settings({"ENRICH_HOME": tempfile.gettempdir()}).model
    ok = overhead_table(default_model)

    with tempfile.TemporaryDirectory(prefix="enrich-bench-overhead-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        make_photos(tmp / "photos", args.photos)
        made = time.perf_counter() - t0
        t0 = time.perf_counter()
        est = estimate_cli(tmp / "photos", tmp / "home", "--model", "gemini-1.5-flash-8b", "--profile", "caption")
        took = time.perf_counter() - t0
        cost = float(est["cost_usd"]) * 68_000 / max(1, est["items"])
        image = est["by_kind"]["image"]
        ratio = max(cost, SEED_USD) / min(cost, SEED_USD)
        ok &= ratio <= 1.25
        print(f"\n{est['items']:,} photos ({made:.1f} s to link, {took:.1f} s to estimate), caption profile, "
              f"gemini-1.5-flash-8b (prices of {est['price_date']}):")
        print(f"  per photo: {image['input_tokens'] // image['items']} input tokens "
              f"({image['overhead_tokens_per_request']} of prompt and schema), {image['output_tokens_per_item']} "
              f"output tokens ({image['output_source']})")
        print(f"  68,000 photos: ${cost:.2f}  (seed: ${SEED_USD:.2f}; ratio {ratio:.2f}, target <= 1.25)")

        print(f"\nper 1,000 photos on the default model ({default_model}), no history:")
        thousand = tmp / "thousand"
        make_photos(thousand, 1000)
        for name in ("caption", "alt-text", "detailed"):
            e = estimate_cli(thousand, tmp / "home", "--profile", name)
            img = e["by_kind"]["image"]
            print(f"  {name:<9} ${float(e['cost_usd']):.4f}  ({img['input_tokens'] // img['items']} in, "
                  f"{img['output_tokens_per_item']} out per photo)")
    print("\nOK" if ok else "\nNOT MET")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
