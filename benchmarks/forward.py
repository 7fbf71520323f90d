"""Decode and prefill speed of the ModelRunner against transformers, on the embedded SmolLM2-135M.

Measures, in one run and on the same weights:
  * single-stream greedy decode tokens/s (decode steps only, after the prompt's prefill): our runner
    (paged KV cache) at each precision vs transformers' LlamaForCausalLM with its DynamicCache, fp32
    and bf16 (a plain greedy loop, no `generate()` overhead, so the peer is measured at its fastest);
  * batch-of-8 decode: aggregate tokens/s over our single-stream tokens/s;
  * prefill of a 500-token prompt: seconds to the last token's logits, ours vs transformers;
  * accuracy of each precision against fp32, teacher-forced on fixed text: top-1 agreement, KL
    divergence, perplexity (transformers bf16 included, as the deviation users already accept);
  * with `--verify-rows 4,8`: a k-token verify pass (speculative decoding's) in the default bf16+int4
    precision, as a multiple of a one-token decode step at the same context (`--verify-context` tokens,
    ~600 for the copy-heavy extraction of benchmarks/speculative.py), and the cost of each row past the first
    as a fraction of a step (what a drafted token costs to check), split into the compiled 4-bit linear
    layers, the compiled attention and the rest (timed in separate passes, since timing each call adds
    to the pass).
Rounds are interleaved (every system once per round) and medians reported, so a busy machine slows
all systems alike; the first call of each system (warm-up) is reported separately. It also checks
that fp32 greedy output is token-for-token transformers' fp32 output.

    python benchmarks/forward.py            # full run (a few minutes on 2 idle cores)
    python benchmarks/forward.py --smoke    # tiny token counts, one round
    python benchmarks/forward.py --threads 1 --clock cpu   # on a machine shared with other work
    python benchmarks/forward.py --threads 1 --clock cpu --verify-rows 4,8 [--verify-context 600]

Needs the package importable (scripts/install.sh installs it editable; or PYTHONPATH=.).
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch
import transformers

from runtime.loading import load_checkpoint
from runtime.model.architectures import Quantization, build_model
from runtime.model.kernels import attention, binding
from runtime.model.runner import ForwardBatch, ModelRunner

BLOCK_SIZE = 16
#: The clock every measurement reads; `--clock cpu` swaps in process CPU time (see main).
CLOCK = time.perf_counter
PRECISIONS = {
    "fp32": (torch.float32, Quantization.NONE),
    "bf16": (torch.bfloat16, Quantization.NONE),
    "bf16+int8": (torch.bfloat16, Quantization.INT8),
    "bf16+int4": (torch.bfloat16, Quantization.INT4),
}
#: Fixed English text for the accuracy check: standard-library docstrings (stable for a Python version).
ACCURACY_MODULES = ("json", "argparse", "collections", "functools", "inspect", "textwrap")


def _git_revision() -> str:
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
    return result.stdout.strip() or "uncommitted"


def _prompt(seed: int, length: int, vocab_size: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(100, vocab_size, (length,), generator=generator).tolist()


class OurDecoder:
    """Greedy decoding through the ModelRunner, as the engine drives it (one forward per step)."""

    def __init__(self, model: torch.nn.Module, max_len: int, batch_size: int) -> None:
        num_blocks_per_seq = -(-max_len // BLOCK_SIZE)
        self.runner = ModelRunner(model, num_blocks=num_blocks_per_seq * batch_size, block_size=BLOCK_SIZE)
        self.tables = [list(range(i * num_blocks_per_seq, (i + 1) * num_blocks_per_seq)) for i in range(batch_size)]

    def prefill(self, prompts: list[list[int]]) -> torch.Tensor:
        """The prompts' pass as the engine runs it (`is_prefill`: dense weights; without it, a 500-token pass
        took the decode path's 4-bit kernels, 2x the time)."""
        n = len(prompts)
        return self.runner.forward(ForwardBatch(prompts, [0] * n, self.tables[:n], is_prefill=True))

    def score(self, token_ids: list[int]) -> torch.Tensor:
        """Logits of every position of `token_ids` (teacher forcing)."""
        return self.runner.forward(ForwardBatch([token_ids], [0], self.tables[:1], all_logits=True))

    def generate(self, prompts: list[list[int]], num_tokens: int) -> tuple[list[list[int]], float]:
        """Greedy tokens per prompt, and the seconds spent after the prefill (num_tokens - 1 steps)."""
        logits = self.prefill(prompts)
        start = CLOCK()
        outputs: list[list[int]] = [[] for _ in prompts]
        for step in range(num_tokens):
            next_ids = logits.argmax(dim=-1).tolist()
            for output, token in zip(outputs, next_ids):
                output.append(token)
            if step == num_tokens - 1:
                break
            num_cached = [len(prompt) + step for prompt in prompts]
            batch = ForwardBatch([[token] for token in next_ids], num_cached, self.tables[: len(prompts)])
            logits = self.runner.forward(batch)
        return outputs, CLOCK() - start


class HFDecoder:
    """transformers' greedy loop with its DynamicCache, batch 1."""

    def __init__(self, model: transformers.PreTrainedModel) -> None:
        self.model = model

    @torch.inference_mode()
    def prefill(self, prompts: list[list[int]]) -> torch.Tensor:
        return self.model(torch.tensor(prompts), use_cache=True).logits[:, -1]

    @torch.inference_mode()
    def score(self, token_ids: list[int]) -> torch.Tensor:
        return self.model(torch.tensor([token_ids])).logits[0].float()

    @torch.inference_mode()
    def generate(self, prompts: list[list[int]], num_tokens: int) -> tuple[list[list[int]], float]:
        cache = transformers.DynamicCache(config=self.model.config)
        out = self.model(torch.tensor(prompts), past_key_values=cache, use_cache=True)
        start = CLOCK()
        tokens = []
        for step in range(num_tokens):
            next_id = out.logits[:, -1].argmax(dim=-1)
            tokens.append(int(next_id[0]))
            if step == num_tokens - 1:
                break
            out = self.model(next_id[:, None], past_key_values=cache, use_cache=True)
        return [tokens], CLOCK() - start


def _hf_model(checkpoint, dtype: torch.dtype) -> transformers.PreTrainedModel:
    config = checkpoint.config
    hf_config = transformers.LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        max_position_embeddings=config.max_position_embeddings,
        rms_norm_eps=config.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta},
        tie_word_embeddings=config.tie_word_embeddings,
    )
    model = transformers.LlamaForCausalLM(hf_config)
    model.load_state_dict(checkpoint.weights, strict=False)
    model.tie_weights()
    return model.to(dtype).eval()


def _accuracy(reference: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Teacher-forced agreement with the fp32 reference: argmax match rate, mean KL(ref || x), perplexity."""
    log_probs, ref_log_probs = logits.log_softmax(-1), reference.log_softmax(-1)
    kl = (ref_log_probs.exp() * (ref_log_probs - log_probs)).sum(-1).mean()
    nll = -log_probs[:-1].gather(1, targets[:, None]).mean()
    top1 = (logits.argmax(-1) == reference.argmax(-1)).float().mean()
    return {"top1_agreement": float(top1), "kl_from_fp32": float(kl), "perplexity": float(nll.exp())}


def _accuracy_tokens(checkpoint, max_tokens: int) -> list[int]:
    text = "\n".join(importlib.import_module(name).__doc__ or "" for name in ACCURACY_MODULES)
    return checkpoint.tokenizer.encode(text)[:max_tokens]


def _timed(fn: Callable[[], object]) -> float:
    start = CLOCK()
    fn()
    return CLOCK() - start


#: The compiled calls a verify pass's time is split into: (module, function) as the decode plan calls them.
TIMED_KERNELS = {"linear": (binding, "int4_linear"), "attention": (attention, "paged_attention")}


class KernelTimes:
    """While active, the seconds (CLOCK) spent in each of `TIMED_KERNELS`, by wrapping the module functions."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(TIMED_KERNELS, 0.0)
        self._originals: dict[str, Callable[..., torch.Tensor]] = {}

    def __enter__(self) -> KernelTimes:
        for name, (module, function) in TIMED_KERNELS.items():
            original = self._originals[name] = getattr(module, function)

            def timed(
                *args: object, _original: Callable[..., torch.Tensor] = original, _name: str = name, **kwargs: object
            ) -> torch.Tensor:
                start = CLOCK()
                out = _original(*args, **kwargs)
                self.seconds[_name] += CLOCK() - start
                return out

            setattr(module, function, timed)
        return self

    def __exit__(self, *exc: object) -> None:
        for name, (module, function) in TIMED_KERNELS.items():
            setattr(module, function, self._originals[name])


def _verify_costs(
    model: torch.nn.Module, prompt: list[int], rows: list[int], rounds: int
) -> dict[int, dict[str, float]]:
    """For each k in `rows`, at the same cached context: a verify pass (k new tokens, every row's logits) over
    a one-token step, and what each row past the first costs as a fraction of a step, in all and in each of
    `TIMED_KERNELS` (the rest: every other part of the pass). Medians of interleaved samples; the parts come
    from separate passes with the kernels timed."""
    decoder = OurDecoder(model, len(prompt) + max(rows), 1)
    decoder.prefill([prompt])

    def verify(k: int) -> None:
        draft = list(range(100, 100 + k))  # each pass rewrites the same positions' K/V
        decoder.runner.forward(ForwardBatch([draft], [len(prompt)], decoder.tables[:1], all_logits=True))

    def kernel_seconds(k: int) -> dict[str, float]:
        with KernelTimes() as times:
            verify(k)
        return times.seconds

    samples: dict[int, list[float]] = {k: [] for k in (1, *rows)}
    parts: dict[int, list[dict[str, float]]] = {k: [] for k in (1, *rows)}
    for _ in range(10 * rounds):
        for k, times in samples.items():
            times.append(_timed(lambda k=k: verify(k)))
            parts[k].append(kernel_seconds(k))
    step = statistics.median(samples[1])
    kernel = {k: {name: statistics.median(p[name] for p in parts[k]) for name in TIMED_KERNELS} for k in parts}
    costs = {}
    for k in rows:
        extra_row = (statistics.median(samples[k]) - step) / (k - 1) / step
        by_kernel = {name: (kernel[k][name] - kernel[1][name]) / (k - 1) / step for name in TIMED_KERNELS}
        costs[k] = {
            "pass_vs_step": statistics.median(samples[k]) / step,
            "extra_row": extra_row,
            **{f"extra_row_{name}": cost for name, cost in by_kernel.items()},
            "extra_row_rest": extra_row - sum(by_kernel.values()),
        }
    return costs


def add_clock_argument(parser: argparse.ArgumentParser) -> None:
    """`--clock wall|cpu`: what the measurements read (cpu: robust to other processes, with --threads 1)."""
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: process CPU time, robust to other processes sharing the cores (use with --threads 1)",
    )


def interleaved_seconds(
    cases: dict[str, Callable[[], object]], rounds: int, clock: Callable[[], float]
) -> dict[str, list[float]]:
    """Seconds of each case per round, every case once a round, so a busy machine slows all of them alike."""
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, case in cases.items():
            start = clock()
            case()
            seconds[name].append(clock() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a few tokens, one round: checks the script runs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=64, help="tokens generated per decode measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--prefill-len", type=int, default=500)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--accuracy-tokens", type=int, default=1000)
    parser.add_argument(
        "--verify-rows", default="", help="comma-separated k: time k-token verify passes against a decode step"
    )
    parser.add_argument("--verify-context", type=int, default=None, help="cached tokens of the verify passes")
    add_clock_argument(parser)
    args = parser.parse_args()
    if args.verify_context is not None and args.verify_context < 1:
        parser.error(f"--verify-context must be at least 1 token, not {args.verify_context}")
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.smoke:
        args.tokens, args.rounds, args.prefill_len, args.accuracy_tokens = 5, 1, 40, 64
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)

    checkpoint = load_checkpoint(None)
    vocab_size = checkpoint.config.vocab_size
    prompt = _prompt(0, args.prompt_len, vocab_size)
    batch_prompts = [_prompt(i + 1, args.prompt_len - i, vocab_size) for i in range(args.batch)]
    long_prompt = _prompt(99, args.prefill_len, vocab_size)
    max_len = max(args.prefill_len, args.prompt_len + args.tokens, args.accuracy_tokens) + 1

    ours = {
        name: build_model(checkpoint.config, dict(checkpoint.weights), dtype=dtype, quantization=quant)
        for name, (dtype, quant) in PRECISIONS.items()
    }
    systems: dict[str, object] = {f"ours {name}": OurDecoder(model, max_len, 1) for name, model in ours.items()}
    systems |= {
        f"transformers {name}": HFDecoder(_hf_model(checkpoint, dtype))
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))
    }
    batched = {f"ours {name} x{args.batch}": OurDecoder(model, max_len, args.batch) for name, model in ours.items()}

    warmup = {name: _timed(lambda s=system: s.generate([prompt], 2)) for name, system in systems.items()}
    warmup |= {name: _timed(lambda s=system: s.generate(batch_prompts, 2)) for name, system in batched.items()}
    decode: dict[str, list[float]] = {name: [] for name in systems | batched}
    prefill: dict[str, list[float]] = {name: [] for name in systems}
    outputs: dict[str, list[int]] = {}
    for _ in range(args.rounds):
        for name, system in systems.items():
            tokens, elapsed = system.generate([prompt], args.tokens)
            outputs[name] = tokens[0]
            decode[name].append((args.tokens - 1) / elapsed)
            prefill[name].append(_timed(lambda s=system: s.prefill([long_prompt])))
        for name, system in batched.items():
            _, elapsed = system.generate(batch_prompts, args.tokens)
            decode[name].append(args.batch * (args.tokens - 1) / elapsed)

    tok_s = {name: statistics.median(values) for name, values in decode.items()}
    prefill_s = {name: statistics.median(values) for name, values in prefill.items()}
    print(
        f"clock={args.clock} threads={args.threads} tokens={args.tokens} rounds={args.rounds} "
        f"prompt={args.prompt_len} prefill={args.prefill_len} batch={args.batch}"
    )
    print(f"{'system':<26}{'warm-up s':>10}{'decode tok/s':>14}{'prefill s':>11}")
    for name in systems | batched:
        prefill_text = f"{prefill_s[name]:>11.3f}" if name in prefill_s else f"{'':>11}"
        print(f"{name:<26}{warmup[name]:>10.2f}{tok_s[name]:>14.1f}{prefill_text}")
    ratios = {}
    for name in PRECISIONS:
        for peer in ("fp32", "bf16"):
            ours_name, peer_name = f"ours {name}", f"transformers {peer}"
            ratios[f"{name} decode vs transformers {peer}"] = tok_s[ours_name] / tok_s[peer_name]
            ratios[f"{name} prefill speed vs transformers {peer}"] = prefill_s[peer_name] / prefill_s[ours_name]
        batched_name = f"ours {name} x{args.batch}"
        ratios[f"{name} batch x{args.batch} vs single stream"] = tok_s[batched_name] / tok_s[f"ours {name}"]
    for name, ratio in ratios.items():
        print(f"  {name:<48}{ratio:6.2f}x")
    verify_rows = [int(k) for k in args.verify_rows.split(",") if k]
    verify_context = args.prompt_len if args.verify_context is None else args.verify_context
    verify_prompt = _prompt(7, verify_context, vocab_size)
    verify = _verify_costs(ours["bf16+int4"], verify_prompt, verify_rows, args.rounds) if verify_rows else {}
    for k, cost in verify.items():
        print(
            f"  bf16+int4 verify pass of {k} rows at {verify_context} cached tokens: {cost['pass_vs_step']:.2f}x a "
            f"decode step, {cost['extra_row']:.3f} of a step per extra row (4-bit linear "
            f"{cost['extra_row_linear']:.3f}, attention {cost['extra_row_attention']:.3f}, rest "
            f"{cost['extra_row_rest']:.3f})"
        )
    fp32_matches = outputs["ours fp32"] == outputs["transformers fp32"]
    print(f"fp32 greedy tokens identical to transformers fp32: {fp32_matches}")

    text_ids = _accuracy_tokens(checkpoint, args.accuracy_tokens)
    targets = torch.tensor(text_ids[1:])
    scored = {name: system.score(text_ids) for name, system in systems.items()}
    accuracy = {name: _accuracy(scored["ours fp32"], logits, targets) for name, logits in scored.items()}
    print(f"accuracy over {len(text_ids)} tokens of text, against our fp32 (= transformers fp32):")
    for name, values in accuracy.items():
        print(
            f"  {name:<24} top-1 agreement {values['top1_agreement']:.4f}  KL {values['kl_from_fp32']:.5f}  "
            f"perplexity {values['perplexity']:.3f}"
        )
    print(
        json.dumps(
            {
                "benchmark": "forward",
                "git": _git_revision(),
                "torch": torch.__version__,
                "threads": args.threads,
                "clock": args.clock,
                "tokens": args.tokens,
                "rounds": args.rounds,
                "prefill_len": args.prefill_len,
                "batch": args.batch,
                "decode_tok_s": tok_s,
                "prefill_s": prefill_s,
                "warmup_s": warmup,
                "ratios": ratios,
                "verify_context": verify_context,
                "verify_costs": verify,
                "fp32_greedy_identical": fp32_matches,
                "accuracy": accuracy,
            }
        )
    )


if __name__ == "__main__":
    main()
