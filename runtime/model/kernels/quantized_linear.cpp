// W4A16 and W4A8 linear layers for CPU: 4-bit weight codes times activations quantized per group of 32
// to int16 (every decoder layer) or int8 (the output head's first pass), and the output head's rescoring
// (each row's largest first-pass logits recomputed exactly). All are row invariant: a row's output is
// bitwise the same whatever other rows share the call (batched decode equals single decode, a
// speculative verify pass equals plain decoding).
//
// Weights are Int4Linear's tiled buffers (`pack_int4_tiles` in quantization.py makes them once):
// `tiles` [N / 16, K / 32, 256] uint8 and `scales`, `bases` [N / 16, K / 32, 16] bfloat16, so a weight
// is `q * scale + base`. A tile is 16 output columns, one per 32-bit lane of a register. The 256 bytes
// of one group of a tile are 4 registers; register j's lane c holds, for input pairs i = 4j + p
// (p = 0..3), the code of input 2i in bits 4p..4p+3 and that of input 2i + 1 in bits 16+4p..19+4p,
// so a shift and a mask give 16 columns' codes of one input pair as int16 pairs. Per row m:
//
//   y[m, n] = sum_g scale[n, g] * a_scale[m, g] * sum_{k in g} q[n, k] * a[m, k]   (integer dot products)
//           + sum_g base[n, g] * x_sum[m, g]                                         (in float)
//
// int16: per input pair, one AVX-512 VNNI `vpdpwssd` multiplies 16 columns' code pairs by the row's
// broadcast activation pair (a[2i], a[2i + 1]) and adds into 16 int32 column sums: exact (|sum| <= 15 *
// 32767 * 32), so how they are split over accumulators changes nothing; x_sum is the exact group sum.
// int8: the same tiles serve `vpdpbusd` unchanged (`packed & 0x0F0F0F0F` and `(packed >> 4) & 0x0F0F0F0F`
// hold inputs 8j + (0, 4, 1, 5) and 8j + (2, 6, 3, 7) as bytes, the order the activation words are stored
// in), so a group costs 8 instructions instead of 16; x_sum is the group sum as quantized, since against
// the exact sum the uncentred codes (0..15) multiply the rounding error. After each group two FMAs add the
// group into 16 float column sums, over groups in a fixed order: no horizontal reduce, and nothing a row
// computes depends on the other rows. Rows in blocks of up to 8 share each unpacked weight register;
// threads split the tiles (torch's pool, so torch.get_num_threads()).
//
// Measured limits (Zen 4, one core): a zmm vpdpwssd issues once a cycle (latency 4) on the pipes the FMAs
// use, and a row's group costs 16 of them plus 3 float operations on those pipes (the scale product and
// two fused adds, whose roundings the results depend on), so ~0.33 ns per vpdpwssd at 3.6 GHz; in cache
// the kernel runs at ~0.35 at 8 rows (unrolling, deferring the float update and sharing broadcasts
// over tiles gained nothing). With few rows the weights' stream from memory bounds it instead: see
// runtime/model/huge_pages.py. The 49152 x 576 head with int8 activations: 0.82x the int16 time at 1 row,
// 0.62x at 8.
//
// Why the decoder layers keep int16 (teacher-forced on benchmarks/forward.py's 1000 tokens, default mode
// today: top-1 0.986, KL 0.00498, of which the head's 4-bit tail is 0.0037: an exact head gives 0.00127).
// int8 activations in every layer with an exact head: top-1 0.978, KL 0.0033; in gate_up only 0.982; in
// qkv only 0.979; in o_proj only 0.984; each group escalated to int16 where its int8 error exceeds T times
// its row's squared norm: top-1 0.982 at 6% and 17% escalated, 0.986 only at 46% (90% of 8-row blocks
// holding one). Top-1 agreement, not KL, is what int8 costs, and the head's rescored logits are the only
// place its error cannot reach the choice. Measured last round: pure int8 8 rows 1.50-1.63x this kernel,
// a decode step's calls at 8 rows 8 x 0.225 of one row's against 8 x 0.36: even that is a kernel-only batch
// gain of 4.4x, not 5x.
//
// Intel's tile unit (AMX-INT8), tried on a Xeon that has it and not kept: an int16 code as two signed bytes
// (256 * high + low, codes within +-32639), a pair of groups per pass (each group's activations in rows of
// their own, zeros under the other group's inputs, so 4 rows fill a tile's 16), codes unpacked to bytes three
// passes ahead (a pass reading bytes the vector unit has just written waits for them: 2x) and sums read two
// passes later. The outputs were bitwise this kernel's, but a pass (load, dot product, store) costs ~9 ns
// alone and ~26 ns inside the kernel: a decode step's calls ran 0.9x at 1-2 rows, 1.1-1.26x at 4, ~1.0x at 8,
// the head's int8 pass 0.8-1.0x. In one run a verify row at 600 cached tokens cost 0.24 of a step instead of
// 0.32 at 4 rows, 0.29 instead of 0.31 at 8; benchmarks/speculative.py's copy-heavy ratio moved within noise.
// A later microbenchmark of the best-shaped variant (int12 activations as 16 * high + low bytes beside the
// weights as 16q and q, so one 64-byte pass covers a whole group for up to 16 rows and its sums need no
// combining; codes unpacked two passes ahead; 30 layers of 3072 x 576 streamed from L3) ran 1.29-1.37x the
// VNNI loop at 8 rows, 1.13-1.26x at 4, 0.91x at 1: a pass's load, dot product and store cost ~11 ns whatever
// the rows, the unpacking and the float update the rest. Not built: 8-row kernels ~1.3x faster leave a batch
// of 8 near 3.7x single stream (issue 15 asks 5x), and int12 changes the activations' rounding.

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <torch/extension.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <optional>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#include <immintrin.h>
#define STENCIL_HAS_VNNI 1
#else
#define STENCIL_HAS_VNNI 0
#endif

namespace {

constexpr int64_t kGroupSize = 32;
constexpr int64_t kTileColumns = 16;
constexpr int64_t kTileGroupBytes = kGroupSize * kTileColumns / 2;
constexpr int64_t kMaxRowBlock = 8;        // rows sharing each unpacked weight register
constexpr int64_t kTilesPerChunk = 4;      // tiles kept in cache while all row blocks pass over them
constexpr int64_t kMinWeightsPerThread = 1 << 15;  // below this a thread costs more than it saves
// Software prefetch distance in groups (a group of a tile: 256 bytes of codes, 32 of scales and of
// bases): a decode step streams every weight from memory once, one row's work per group is short,
// and the streams run on past a tile's end into the next tile's, which a thread reads next.
constexpr int64_t kPrefetchGroups = 12;

#if STENCIL_HAS_VNNI

// Prefetch hints never fault, so the address may run past the buffer; it is computed as an integer.
inline void prefetch(const void* base, int64_t byte_offset) {
  _mm_prefetch(reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(base) + byte_offset), _MM_HINT_T0);
}

// Activations of M rows quantized for the kernel.
struct QuantizedActivations {
  // int16: [M, K / 2], the codes of inputs 2i (low half) and 2i + 1 (high half) of pair i.
  // int8: [M, K / 4], per group and tile register j the bytes of inputs 8j + (0, 4, 1, 5), then of
  // 8j + (2, 6, 3, 7): the order in which the register's low and high nibbles hold their codes.
  std::vector<int32_t> words;
  std::vector<float> scales;  // [M, K / 32]: each group's step
  std::vector<float> sums;    // [M, K / 32]: sum of each group's inputs (int16: exact; int8: as quantized)
};

// 16 bfloat16 values (as raw bits) widened to float32.
inline __m512 widen_bf16(const void* bits) {
  return _mm512_castsi512_ps(
      _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(static_cast<const __m256i*>(bits))), 16));
}

// 16 per-column weight parameters (scales or bases) as float32: bfloat16 ones widened, float32 ones (a file's
// block parameters, kept exact) loaded.
inline __m512 load_parameters(const uint16_t* bf16_bits) { return widen_bf16(bf16_bits); }
inline __m512 load_parameters(const float* values) { return _mm512_loadu_ps(values); }

// 16 float32 values rounded to bfloat16 as c10::BFloat16 rounds them (nearest even, NaN kept).
inline __m256i round_to_bf16(__m512 values) {
  const __m512i bits = _mm512_castps_si512(values);
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF))), 16);
  rounded = _mm512_mask_mov_epi32(rounded, _mm512_cmp_ps_mask(values, values, _CMP_UNORD_Q), _mm512_set1_epi32(0x7FC0));
  return _mm512_cvtepi32_epi16(rounded);
}

// One group of 32 bfloat16 inputs: codes of step absmax / (2^(BITS - 1) - 1), rounded to nearest even
// (int16: 16 words in input order; int8: 8 words in the tiles' nibble order), step and sum.
template <int BITS>
inline void quantize_group(const uint16_t* x, int32_t* words, float* scale, float* sum) {
  const __m512 low = widen_bf16(x), high = widen_bf16(x + 16);
  const float absmax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(low), _mm512_abs_ps(high)));
  const float step = absmax / (BITS == 8 ? 127.0f : 32767.0f);
  const __m512 inverse = _mm512_set1_ps(step > 0.0f ? 1.0f / step : 0.0f);
  const __m512i low_codes = _mm512_cvtps_epi32(_mm512_mul_ps(low, inverse));
  const __m512i high_codes = _mm512_cvtps_epi32(_mm512_mul_ps(high, inverse));
  *scale = step;
  if constexpr (BITS == 8) {
    // Byte b of word 2j + h holds input 8j + kOrder[4h + b].
    constexpr int kOrder[8] = {0, 4, 1, 5, 2, 6, 3, 7};
    alignas(32) int8_t codes[kGroupSize];
    _mm_store_si128(reinterpret_cast<__m128i*>(codes), _mm512_cvtsepi32_epi8(low_codes));
    _mm_store_si128(reinterpret_cast<__m128i*>(codes + 16), _mm512_cvtsepi32_epi8(high_codes));
    auto* bytes = reinterpret_cast<int8_t*>(words);
    for (int i = 0; i < kGroupSize; ++i) bytes[i] = codes[8 * (i / 8) + kOrder[i % 8]];
    // The base term must see the inputs as quantized: against the exact sum, the uncentred codes
    // (0..15) would multiply the int8 rounding error.
    *sum = static_cast<float>(_mm512_reduce_add_epi32(_mm512_add_epi32(low_codes, high_codes))) * step;
  } else {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(words), _mm512_cvtsepi32_epi16(low_codes));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(words + 8), _mm512_cvtsepi32_epi16(high_codes));
    *sum = _mm512_reduce_add_ps(_mm512_add_ps(low, high));
  }
}

template <int BITS>
void quantize_activations(const uint16_t* x, int64_t num_rows, int64_t num_inputs, QuantizedActivations& out) {
  const int64_t num_groups = num_inputs / kGroupSize, words_per_group = kGroupSize * BITS / 32;
  out.words.resize(num_rows * num_groups * words_per_group);
  out.scales.resize(num_rows * num_groups);
  out.sums.resize(num_rows * num_groups);
  for (int64_t i = 0; i < num_rows * num_groups; ++i)
    quantize_group<BITS>(x + i * kGroupSize, out.words.data() + i * words_per_group, out.scales.data() + i,
                         out.sums.data() + i);
}

// TILES adjacent tiles (16 columns each) for rows m0 .. m0 + M - 1. CHAINS independent integer accumulators
// per row and tile hide the dot products' latency when rows are few; 5 to 8 rows of one tile (a chain each:
// more spill registers) wait on that latency, so two tiles share each broadcast activation pair there and
// twice the dot products are in flight. Each tile's sums are made as alone (the same integer dots, the same
// float operations in the same order), so no output depends on the pairing.
template <int M, int CHAINS, int BITS, int TILES, bool FIFTH, typename P>
inline void dot_tiles(const __m512i* tile, int64_t registers_per_tile, const __m512i* fifth, const P* scales,
                      const P* bases, int64_t parameters_per_tile, const QuantizedActivations& act, int64_t m0,
                      int64_t num_inputs, int64_t num_columns, c10::BFloat16* out) {
  constexpr int64_t kWordsPerGroup = kGroupSize * BITS / 32;
  const int64_t num_groups = num_inputs / kGroupSize, words_per_row = num_groups * kWordsPerGroup;
  const __m512i nibbles = _mm512_set1_epi32(BITS == 8 ? 0x0F0F0F0F : 0x000F000F);
  const __m512i fifth_mask = _mm512_set1_epi32(0x00100010);
  const int64_t groups_per_tile = registers_per_tile / 4;
  const int32_t* words[M];
  const float* a_scales[M];
  const float* a_sums[M];
  __m512 acc[M][TILES];
  for (int m = 0; m < M; ++m) {
    words[m] = act.words.data() + (m0 + m) * words_per_row;
    a_scales[m] = act.scales.data() + (m0 + m) * num_groups;
    a_sums[m] = act.sums.data() + (m0 + m) * num_groups;
    for (int u = 0; u < TILES; ++u) acc[m][u] = _mm512_setzero_ps();
  }
  for (int64_t g = 0; g < num_groups; ++g) {
    __m512i dots[M][TILES][CHAINS];
    for (int m = 0; m < M; ++m)
      for (int u = 0; u < TILES; ++u)
        for (int c = 0; c < CHAINS; ++c) dots[m][u][c] = _mm512_setzero_si512();
    __m512i high[TILES];  // FIFTH: bit 16e + i of lane c is bit 4 of column c's code of input 2i + e
    for (int u = 0; u < TILES; ++u) {
      prefetch(scales + u * parameters_per_tile, (g + kPrefetchGroups) * kTileColumns * sizeof(P));
      prefetch(bases + u * parameters_per_tile, (g + kPrefetchGroups) * kTileColumns * sizeof(P));
      if constexpr (FIFTH) {
        const __m512i* own = fifth + u * groups_per_tile;
        prefetch(own, (g + kPrefetchGroups) * 64);
        high[u] = _mm512_loadu_si512(own + g);
      }
    }
    for (int j = 0; j < 4; ++j) {
      __m512i packed[TILES];
      for (int u = 0; u < TILES; ++u) {
        const __m512i* own = tile + u * registers_per_tile;
        prefetch(own, ((g + kPrefetchGroups) * 4 + j) * 64);
        packed[u] = _mm512_loadu_si512(own + g * 4 + j);
      }
      if constexpr (BITS == 8) {  // u8 codes times s8 activations, 4 inputs per lane
        for (int h = 0; h < 2; ++h) {
          __m512i codes[TILES];
          for (int u = 0; u < TILES; ++u)
            codes[u] = _mm512_and_si512(h == 0 ? packed[u] : _mm512_srli_epi32(packed[u], 4), nibbles);
          const int64_t word = g * kWordsPerGroup + j * 2 + h;
          for (int m = 0; m < M; ++m) {
            const __m512i activations = _mm512_set1_epi32(words[m][word]);
            for (int u = 0; u < TILES; ++u) {
              __m512i& dot = dots[m][u][(j * 2 + h) % CHAINS];
              dot = _mm512_dpbusd_epi32(dot, codes[u], activations);
            }
          }
        }
      } else {  // int16 code pairs times int16 activation pairs
        for (int p = 0; p < 4; ++p) {
          __m512i codes[TILES];
          for (int u = 0; u < TILES; ++u) {
            codes[u] = p == 0   ? _mm512_and_si512(packed[u], nibbles)
                       : p == 3 ? _mm512_srli_epi16(packed[u], 12)
                                : _mm512_and_si512(_mm512_srli_epi32(packed[u], 4 * p), nibbles);
            if constexpr (FIFTH) {  // pair i = 4j + p's fifth bits moved to bits 4 and 20, merged: a | (b & c)
              const int shift = 4 * j + p - 4;
              const __m512i moved = shift >= 0 ? _mm512_srli_epi32(high[u], shift) : _mm512_slli_epi32(high[u], -shift);
              codes[u] = _mm512_ternarylogic_epi32(codes[u], moved, fifth_mask, 0xF8);
            }
          }
          const int64_t word = g * kWordsPerGroup + j * 4 + p;
          for (int m = 0; m < M; ++m) {
            const __m512i activations = _mm512_set1_epi32(words[m][word]);
            for (int u = 0; u < TILES; ++u) {
              __m512i& dot = dots[m][u][(j * 4 + p) % CHAINS];
              dot = _mm512_dpwssd_epi32(dot, codes[u], activations);
            }
          }
        }
      }
    }
    for (int u = 0; u < TILES; ++u) {
      const __m512 w_scale = load_parameters(scales + u * parameters_per_tile + g * kTileColumns);
      const __m512 w_base = load_parameters(bases + u * parameters_per_tile + g * kTileColumns);
      for (int m = 0; m < M; ++m) {
        __m512i dot = dots[m][u][0];
        for (int c = 1; c < CHAINS; ++c) dot = _mm512_add_epi32(dot, dots[m][u][c]);
        const __m512 scale = _mm512_mul_ps(w_scale, _mm512_set1_ps(a_scales[m][g]));
        acc[m][u] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc[m][u]);
        acc[m][u] = _mm512_fmadd_ps(w_base, _mm512_set1_ps(a_sums[m][g]), acc[m][u]);
      }
    }
  }
  for (int m = 0; m < M; ++m)
    for (int u = 0; u < TILES; ++u)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + (m0 + m) * num_columns + u * kTileColumns),
                          round_to_bf16(acc[m][u]));
}

// `rows` rows (1 to kMaxRowBlock) of the tiles from `tile` on, two at a time where `tiles` allows and it pays;
// returns the tiles done. Paired, a decode step's calls (SmolLM2, one thread; `benchmarks/int4_kernels.py
// --baseline`) ran 1.12-1.19x faster at 5 and 6 rows and 1.04-1.06x at 7 and 8; 4 rows ran 0.96-0.98x, and
// the head's int8 pass was slower paired at every row count.
template <int BITS, bool FIFTH, typename P>
int64_t dot_block(int64_t rows, int64_t tiles, const __m512i* tile, int64_t registers_per_tile, const __m512i* fifth,
                  const P* scales, const P* bases, int64_t parameters_per_tile, const QuantizedActivations& act,
                  int64_t m0, int64_t num_inputs, int64_t num_columns, c10::BFloat16* out) {
#define STENCIL_ROWS(R, CHAINS, TILES)                                                                        \
  case R:                                                                                                    \
    dot_tiles<R, CHAINS, BITS, TILES, FIFTH, P>(tile, registers_per_tile, fifth, scales, bases,               \
                                                parameters_per_tile, act, m0, num_inputs, num_columns, out); \
    return TILES;
  if constexpr (BITS == 16) {
    if (tiles >= 2) switch (rows) {
        STENCIL_ROWS(5, 1, 2) STENCIL_ROWS(6, 1, 2) STENCIL_ROWS(7, 1, 2) STENCIL_ROWS(8, 1, 2)
      }
  }
  switch (rows) {
    STENCIL_ROWS(1, 4, 1) STENCIL_ROWS(2, 4, 1) STENCIL_ROWS(3, 2, 1) STENCIL_ROWS(4, 2, 1)
    STENCIL_ROWS(5, 1, 1) STENCIL_ROWS(6, 1, 1) STENCIL_ROWS(7, 1, 1) STENCIL_ROWS(8, 1, 1)
  }
#undef STENCIL_ROWS
  TORCH_CHECK(false, "dot_block: 1 to ", kMaxRowBlock, " rows, not ", rows);
}

// Dot product of K bfloat16 values in float32, in a fixed order: two 16-lane accumulators, then
// _mm512_reduce_add_ps.
inline float dot_bf16(const uint16_t* a, const uint16_t* b, int64_t num_inputs) {
  __m512 even = _mm512_setzero_ps(), odd = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 32 <= num_inputs; k += 32) {
    even = _mm512_fmadd_ps(widen_bf16(a + k), widen_bf16(b + k), even);
    odd = _mm512_fmadd_ps(widen_bf16(a + k + 16), widen_bf16(b + k + 16), odd);
  }
  for (; k < num_inputs; k += 16) {
    const __mmask16 mask = num_inputs - k >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (num_inputs - k)) - 1);
    const auto load = [mask](const uint16_t* p) {
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, p)), 16));
    };
    even = _mm512_fmadd_ps(load(a + k), load(b + k), even);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(even, odd));
}

// The `count`-th largest of values[0, n) (count <= n): a min-heap of the largest so far, whose root is the
// smallest kept, and whose root only a strictly larger value displaces.
inline float cut_value(const float* values, int64_t n, int64_t count, std::vector<float>& heap) {
  heap.assign(values, values + count);
  const auto larger = std::greater<float>();
  std::make_heap(heap.begin(), heap.end(), larger);
  const auto offer = [&](float value) {
    if (value > heap.front()) {
      std::pop_heap(heap.begin(), heap.end(), larger);
      heap.back() = value;
      std::push_heap(heap.begin(), heap.end(), larger);
    }
  };
  int64_t j = count;
  for (; j < n && j % 16 != 0; ++j) offer(values[j]);
  for (; j + 16 <= n; j += 16) {  // most blocks hold nothing above the root: one compare skips them
    __mmask16 above = _mm512_cmp_ps_mask(_mm512_loadu_ps(values + j), _mm512_set1_ps(heap.front()), _CMP_GT_OQ);
    while (above) {
      offer(values[j + __builtin_ctz(above)]);
      above &= above - 1;
    }
  }
  for (; j < n; ++j) offer(values[j]);
  return heap.front();
}

#endif  // STENCIL_HAS_VNNI

void check_bf16_matrix(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 2 && t.scalar_type() == torch::kBFloat16 && t.is_contiguous(), name,
              " must be a contiguous 2-D bfloat16 tensor, not ", t.scalar_type(), " ", t.sizes());
}

#if STENCIL_HAS_VNNI
// The schedule both linear kernels share: threads split the output tiles, each thread takes them
// kTilesPerChunk at a time (kept in cache) and passes every block of up to kMaxRowBlock rows over a chunk.
// `block(tile, tiles_left, m0, rows)` computes rows m0 .. m0 + rows - 1 from `tile` on and returns the tiles done.
template <typename Block>
void for_each_row_block(int64_t num_tiles, int64_t num_rows, int64_t num_inputs, const Block& block) {
  const int64_t grain = std::max<int64_t>(1, kMinWeightsPerThread / (kTileColumns * num_inputs * num_rows));
  at::parallel_for(0, num_tiles, grain, [&](int64_t begin, int64_t end) {
    for (int64_t chunk = begin; chunk < end; chunk += kTilesPerChunk) {
      const int64_t chunk_end = std::min(chunk + kTilesPerChunk, end);
      for (int64_t m0 = 0; m0 < num_rows; m0 += kMaxRowBlock)
        for (int64_t t = chunk; t < chunk_end;) t += block(t, chunk_end - t, m0, std::min(kMaxRowBlock, num_rows - m0));
    }
  });
}

template <int BITS, bool FIFTH, typename P>
void int4_product(const torch::Tensor& x, const torch::Tensor& tiles, const std::optional<torch::Tensor>& fifth_bits,
                  const torch::Tensor& scales, const torch::Tensor& bases, torch::Tensor& out) {
  const int64_t num_rows = x.size(0), num_inputs = x.size(1), num_groups = num_inputs / kGroupSize;
  const int64_t num_tiles = tiles.size(0), num_columns = num_tiles * kTileColumns;
  static thread_local QuantizedActivations act;
  quantize_activations<BITS>(reinterpret_cast<const uint16_t*>(x.data_ptr()), num_rows, num_inputs, act);
  const auto* w = reinterpret_cast<const __m512i*>(tiles.data_ptr<uint8_t>());
  const auto* high = FIFTH ? reinterpret_cast<const __m512i*>(fifth_bits->data_ptr<uint8_t>()) : nullptr;
  const auto* s = static_cast<const P*>(scales.data_ptr());
  const auto* b = static_cast<const P*>(bases.data_ptr());
  auto* y = out.data_ptr<c10::BFloat16>();
  const QuantizedActivations& shared = act;
  const int64_t registers_per_tile = num_groups * 4, parameters_per_tile = num_groups * kTileColumns;
  for_each_row_block(num_tiles, num_rows, num_inputs, [&](int64_t t, int64_t tiles_left, int64_t m0, int64_t rows) {
    return dot_block<BITS, FIFTH, P>(rows, tiles_left, w + t * registers_per_tile, registers_per_tile,
                                     FIFTH ? high + t * num_groups : nullptr, s + t * parameters_per_tile,
                                     b + t * parameters_per_tile, parameters_per_tile, shared, m0, num_inputs,
                                     num_columns, y + t * kTileColumns);
  });
}
#endif  // STENCIL_HAS_VNNI

// x [M, K] bfloat16 times the 4-bit weight [N, K] given by (tiles, scales, bases), activations quantized to
// `activation_bits` (16 or 8) per group of 32: [M, N] bfloat16. Scales and bases are bfloat16, or float32 for a
// file's block formats (Q4_K's d * sc has up to 17 significant bits). `fifth_bits` [N / 16, K / 32, 64] makes the
// codes 5-bit (a file's Q5_0, Q5_1 and Q5_K: 0.875 bytes a weight with float32 parameters against the int8-code
// layer's 1.125 to 1.25): per tile and group one register, whose lane c holds at bit 16e + i the bit 4 of column
// c's code of input 2i + e, moved beside the nibbles by a shift and merged by one ternary logic operation per
// input pair (int16 activations only).
torch::Tensor int4_linear(const torch::Tensor& x, const torch::Tensor& tiles, const torch::Tensor& scales,
                          const torch::Tensor& bases, int64_t activation_bits,
                          const std::optional<torch::Tensor>& fifth_bits) {
  check_bf16_matrix(x, "x");
  TORCH_CHECK(activation_bits == 16 || activation_bits == 8, "activation_bits must be 16 or 8, not ",
              activation_bits);
  const int64_t num_rows = x.size(0), num_inputs = x.size(1);
  TORCH_CHECK(num_inputs % kGroupSize == 0, "inputs must be a multiple of 32, not ", num_inputs);
  const int64_t num_groups = num_inputs / kGroupSize;
  TORCH_CHECK(tiles.scalar_type() == torch::kUInt8 && tiles.is_contiguous() && tiles.dim() == 3 &&
                  tiles.size(1) == num_groups && tiles.size(2) == kTileGroupBytes,
              "tiles must be contiguous uint8 [N / 16, K / 32, 256] with K = ", num_inputs, ", not ", tiles.sizes());
  const int64_t num_columns = tiles.size(0) * kTileColumns;
  const bool float_parameters = scales.scalar_type() == torch::kFloat32;
  for (const torch::Tensor* t : {&scales, &bases})
    TORCH_CHECK(t->scalar_type() == (float_parameters ? torch::kFloat32 : torch::kBFloat16) && t->is_contiguous() &&
                    t->numel() == num_columns * num_groups,
                "scales and bases must be contiguous [N / 16, K / 32, 16], both bfloat16 or both float32");
  if (fifth_bits.has_value()) {
    TORCH_CHECK(fifth_bits->scalar_type() == torch::kUInt8 && fifth_bits->is_contiguous() && fifth_bits->dim() == 3 &&
                    fifth_bits->size(0) == tiles.size(0) && fifth_bits->size(1) == num_groups &&
                    fifth_bits->size(2) == 64,
                "fifth_bits must be contiguous uint8 [N / 16, K / 32, 64] with N = ", num_columns, " and K = ",
                num_inputs, ", not ", fifth_bits->sizes());
    TORCH_CHECK(activation_bits == 16, "5-bit codes (fifth_bits) take 16-bit activations, not ", activation_bits);
  }
  torch::Tensor out = torch::empty({num_rows, num_columns}, x.options());
  if (num_rows == 0) return out;
#if STENCIL_HAS_VNNI
  const auto run = [&](auto* parameter_type) {
    using P = std::remove_pointer_t<decltype(parameter_type)>;
    if (fifth_bits.has_value())
      int4_product<16, true, P>(x, tiles, fifth_bits, scales, bases, out);
    else if (activation_bits == 8)
      int4_product<8, false, P>(x, tiles, fifth_bits, scales, bases, out);
    else
      int4_product<16, false, P>(x, tiles, fifth_bits, scales, bases, out);
  };
  if (float_parameters)
    run(static_cast<float*>(nullptr));
  else
    run(static_cast<uint16_t*>(nullptr));
#else
  TORCH_CHECK(false, "this build of the kernels has no AVX-512 VNNI code path");
#endif
  return out;
}

// Block-code linear layers (W8A16): the integer codes of GGUF's block formats (Q4_0 to Q8_0, Q4_K to
// Q6_K) held as they are stored, one int8 per weight, with a float32 scale and, for formats with one, a
// float32 base per block of 16 or 32 inputs, so a weight is `code * scale + base` exactly as the file's
// dequantization computes it. `codes` [N / 16, K / 32, 512] int8 (`pack_code_tiles` in block_codes.py): per
// tile of 16 columns and group of 32 inputs, 16 runs of 32 bytes, run i holding column c's codes of inputs
// 2i and 2i + 1 at bytes 2c and 2c + 1, so one sign extension makes the int16 code pairs of 16 columns;
// `scales` and `bases` [N / 16, K / G, 16] float32. Activations are int16 per group of 32, as in the 4-bit
// layers; a block of 16 (Q6_K's) takes the sum of its half of the group:
//
//   y[m, n] = sum_b scale[n, b] * a_scale[m, g(b)] * sum_{k in b} code[n, k] * a[m, k] + sum_b base[n, b] * x_sum[m, b]
//
// Exact integer sums (|sum| <= 128 * 32767 * 32 < 2^31), the float update after each block in a fixed order
// per row: row invariant like the 4-bit kernel.
#if STENCIL_HAS_VNNI

constexpr int64_t kCodeGroupBytes = kGroupSize * kTileColumns;

// Sums of each 16 bfloat16 inputs of `num_rows` rows: a block of 16's base term.
void half_group_sums(const uint16_t* x, int64_t num_rows, int64_t num_inputs, std::vector<float>& sums) {
  sums.resize(num_rows * num_inputs / 16);
  for (int64_t i = 0; i < num_rows * num_inputs / 16; ++i) sums[i] = _mm512_reduce_add_ps(widen_bf16(x + 16 * i));
}

template <int M, int CHAINS, int BLOCK, bool BASES>
inline void dot_code_tile(const int8_t* tile, const float* scales, const float* bases, const QuantizedActivations& act,
                          const std::vector<float>& half_sums, int64_t m0, int64_t num_inputs, int64_t num_columns,
                          c10::BFloat16* out) {
  constexpr int64_t kBlocksPerGroup = kGroupSize / BLOCK, kPairsPerBlock = BLOCK / 2;
  const int64_t num_groups = num_inputs / kGroupSize, words_per_row = num_inputs / 2;
  const int32_t* words[M];
  const float* a_scales[M];
  const float* a_sums[M];
  __m512 acc[M];
  for (int m = 0; m < M; ++m) {
    words[m] = act.words.data() + (m0 + m) * words_per_row;
    a_scales[m] = act.scales.data() + (m0 + m) * num_groups;
    a_sums[m] = BLOCK == kGroupSize ? act.sums.data() + (m0 + m) * num_groups
                                    : half_sums.data() + (m0 + m) * num_groups * kBlocksPerGroup;
    acc[m] = _mm512_setzero_ps();
  }
  for (int64_t g = 0; g < num_groups; ++g) {
    for (int64_t line = 0; line < kCodeGroupBytes; line += 64)
      prefetch(tile, (g + kPrefetchGroups) * kCodeGroupBytes + line);
    prefetch(scales, (g + kPrefetchGroups) * kBlocksPerGroup * kTileColumns * 4);
    if constexpr (BASES) prefetch(bases, (g + kPrefetchGroups) * kBlocksPerGroup * kTileColumns * 4);
    for (int64_t h = 0; h < kBlocksPerGroup; ++h) {
      __m512i dots[M][CHAINS];
      for (int m = 0; m < M; ++m)
        for (int c = 0; c < CHAINS; ++c) dots[m][c] = _mm512_setzero_si512();
      for (int64_t p = 0; p < kPairsPerBlock; ++p) {
        const int64_t pair = h * kPairsPerBlock + p;
        const __m512i codes = _mm512_cvtepi8_epi16(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(tile + g * kCodeGroupBytes + pair * 32)));
        for (int m = 0; m < M; ++m)
          dots[m][p % CHAINS] =
              _mm512_dpwssd_epi32(dots[m][p % CHAINS], codes, _mm512_set1_epi32(words[m][g * 16 + pair]));
      }
      const int64_t block = g * kBlocksPerGroup + h;
      const __m512 w_scale = _mm512_loadu_ps(scales + block * kTileColumns);
      for (int m = 0; m < M; ++m) {
        __m512i dot = dots[m][0];
        for (int c = 1; c < CHAINS; ++c) dot = _mm512_add_epi32(dot, dots[m][c]);
        acc[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(w_scale, _mm512_set1_ps(a_scales[m][g])),
                                 acc[m]);
        if constexpr (BASES)
          acc[m] = _mm512_fmadd_ps(_mm512_loadu_ps(bases + block * kTileColumns), _mm512_set1_ps(a_sums[m][block]),
                                   acc[m]);
      }
    }
  }
  for (int m = 0; m < M; ++m)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + (m0 + m) * num_columns), round_to_bf16(acc[m]));
}

template <int BLOCK, bool BASES>
void dot_code_block(int64_t rows, const int8_t* tile, const float* scales, const float* bases,
                    const QuantizedActivations& act, const std::vector<float>& half_sums, int64_t m0,
                    int64_t num_inputs, int64_t num_columns, c10::BFloat16* out) {
#define STENCIL_CODE_ROWS(R, CHAINS)                                                                              \
  case R:                                                                                                        \
    return dot_code_tile<R, CHAINS, BLOCK, BASES>(tile, scales, bases, act, half_sums, m0, num_inputs, num_columns, \
                                                  out);
  switch (rows) {
    STENCIL_CODE_ROWS(1, 4) STENCIL_CODE_ROWS(2, 4) STENCIL_CODE_ROWS(3, 2) STENCIL_CODE_ROWS(4, 2)
    STENCIL_CODE_ROWS(5, 1) STENCIL_CODE_ROWS(6, 1) STENCIL_CODE_ROWS(7, 1) STENCIL_CODE_ROWS(8, 1)
  }
#undef STENCIL_CODE_ROWS
  TORCH_CHECK(false, "dot_code_block: 1 to ", kMaxRowBlock, " rows, not ", rows);
}

template <int BLOCK, bool BASES>
void code_product(const torch::Tensor& x, const torch::Tensor& codes, const torch::Tensor& scales,
                  const torch::Tensor& bases, torch::Tensor& out) {
  const int64_t num_rows = x.size(0), num_inputs = x.size(1), num_groups = num_inputs / kGroupSize;
  const int64_t num_tiles = codes.size(0), num_columns = num_tiles * kTileColumns;
  static thread_local QuantizedActivations act;
  static thread_local std::vector<float> half_sums;
  const auto* xs = reinterpret_cast<const uint16_t*>(x.data_ptr());
  quantize_activations<16>(xs, num_rows, num_inputs, act);
  if (BASES && BLOCK != kGroupSize) half_group_sums(xs, num_rows, num_inputs, half_sums);
  const int8_t* w = codes.data_ptr<int8_t>();
  const float* s = scales.data_ptr<float>();
  const float* b = BASES ? bases.data_ptr<float>() : nullptr;
  auto* y = out.data_ptr<c10::BFloat16>();
  const QuantizedActivations& shared_act = act;
  const std::vector<float>& shared_sums = half_sums;
  const int64_t bytes_per_tile = num_groups * kCodeGroupBytes, parameters_per_tile = num_inputs / BLOCK * kTileColumns;
  for_each_row_block(num_tiles, num_rows, num_inputs, [&](int64_t t, int64_t, int64_t m0, int64_t rows) {
    dot_code_block<BLOCK, BASES>(rows, w + t * bytes_per_tile, s + t * parameters_per_tile,
                                 BASES ? b + t * parameters_per_tile : nullptr, shared_act, shared_sums, m0,
                                 num_inputs, num_columns, y + t * kTileColumns);
    return int64_t{1};
  });
}

#endif  // STENCIL_HAS_VNNI

// x [M, K] bfloat16 times the block-code weight [N, K] given by (codes, scales, bases; bases may be empty for
// formats without one) with blocks of `block_size` (16 or 32) inputs: [M, N] bfloat16.
torch::Tensor block_linear(const torch::Tensor& x, const torch::Tensor& codes, const torch::Tensor& scales,
                           const std::optional<torch::Tensor>& bases, int64_t block_size) {
  check_bf16_matrix(x, "x");
  TORCH_CHECK(block_size == 16 || block_size == 32, "block_size must be 16 or 32, not ", block_size);
  const int64_t num_rows = x.size(0), num_inputs = x.size(1);
  TORCH_CHECK(num_inputs % kGroupSize == 0, "inputs must be a multiple of 32, not ", num_inputs);
  TORCH_CHECK(codes.scalar_type() == torch::kInt8 && codes.is_contiguous() && codes.dim() == 3 &&
                  codes.size(1) == num_inputs / kGroupSize && codes.size(2) == kGroupSize * kTileColumns,
              "codes must be contiguous int8 [N / 16, K / 32, 512] with K = ", num_inputs, ", not ", codes.sizes());
  const int64_t num_columns = codes.size(0) * kTileColumns;
  std::vector<const torch::Tensor*> parameters{&scales};
  if (bases.has_value()) parameters.push_back(&*bases);
  for (const torch::Tensor* t : parameters)
    TORCH_CHECK(t->scalar_type() == torch::kFloat32 && t->is_contiguous() &&
                    t->numel() == num_columns * (num_inputs / block_size),
                "scales and bases must be contiguous float32 [N / 16, K / ", block_size, ", 16]");
  torch::Tensor out = torch::empty({num_rows, num_columns}, x.options());
  if (num_rows == 0) return out;
#if STENCIL_HAS_VNNI
  const torch::Tensor no_bases;
  const torch::Tensor& b = bases.has_value() ? *bases : no_bases;
  if (block_size == 16)
    bases.has_value() ? code_product<16, true>(x, codes, scales, b, out)
                      : code_product<16, false>(x, codes, scales, b, out);
  else
    bases.has_value() ? code_product<32, true>(x, codes, scales, b, out)
                      : code_product<32, false>(x, codes, scales, b, out);
#else
  TORCH_CHECK(false, "this build of the kernels has no AVX-512 VNNI code path");
#endif
  return out;
}

// The head's float32 logits from its bfloat16 first pass: every first-pass logit at least each row's
// `count`-th largest (more than `count` where first-pass logits tie at the cut, so no tie is broken by
// position) recomputed exactly (float32 sums of the bfloat16 products in a fixed order, `dot_bf16`: a
// bfloat16 logit near 25 has steps of 0.125, which ties the top candidates), the rest widened. One call per
// step instead of a conversion, a top-k, the exact sums and a scatter, each row on its own.
torch::Tensor rescored_logits(const torch::Tensor& first_pass, const torch::Tensor& x, const torch::Tensor& weight,
                              int64_t count) {
  check_bf16_matrix(first_pass, "first_pass");
  check_bf16_matrix(x, "x");
  check_bf16_matrix(weight, "weight");
  const int64_t num_rows = x.size(0), num_inputs = x.size(1), num_tokens = weight.size(0);
  TORCH_CHECK(weight.size(1) == num_inputs, "weight has ", weight.size(1), " inputs, x ", num_inputs);
  TORCH_CHECK(first_pass.size(0) == num_rows && first_pass.size(1) == num_tokens, "first_pass must be [",
              num_rows, ", ", num_tokens, "], not ", first_pass.sizes());
  TORCH_CHECK(count >= 1 && count <= num_tokens, "count must be in [1, ", num_tokens, "], not ", count);
  torch::Tensor out = torch::empty({num_rows, num_tokens}, x.options().dtype(torch::kFloat32));
#if STENCIL_HAS_VNNI
  const auto* first = reinterpret_cast<const uint16_t*>(first_pass.data_ptr());
  const auto* xs = reinterpret_cast<const uint16_t*>(x.data_ptr());
  const auto* ws = reinterpret_cast<const uint16_t*>(weight.data_ptr());
  float* logits = out.data_ptr<float>();
  at::parallel_for(0, num_rows, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> heap;
    std::vector<int64_t> chosen;
    for (int64_t m = begin; m < end; ++m) {
      const uint16_t* in = first + m * num_tokens;
      float* row = logits + m * num_tokens;
      int64_t v = 0;
      for (; v + 16 <= num_tokens; v += 16) _mm512_storeu_ps(row + v, widen_bf16(in + v));
      for (; v < num_tokens; ++v) row[v] = c10::BFloat16(in[v], c10::BFloat16::from_bits());
      const float cut = cut_value(row, num_tokens, count, heap);
      chosen.clear();
      for (v = 0; v + 16 <= num_tokens; v += 16)
        for (__mmask16 at_least = _mm512_cmp_ps_mask(_mm512_loadu_ps(row + v), _mm512_set1_ps(cut), _CMP_GE_OQ);
             at_least; at_least &= at_least - 1)
          chosen.push_back(v + __builtin_ctz(at_least));
      for (; v < num_tokens; ++v)
        if (row[v] >= cut) chosen.push_back(v);
      // The chosen weight rows lie scattered over the head, out of cache: all are requested before the first
      // sum (at 8 rows, 128 per row: 0.91 ms instead of 1.12 ms).
      for (const int64_t id : chosen)
        for (int64_t byte = 0; byte < num_inputs * 2; byte += 64) prefetch(ws + id * num_inputs, byte);
      for (const int64_t id : chosen) row[id] = dot_bf16(ws + id * num_inputs, xs + m * num_inputs, num_inputs);
    }
  });
#else
  TORCH_CHECK(false, "this build of the kernels has no AVX-512 VNNI code path");
#endif
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.doc() = "Stencil's compiled CPU kernels (W4A16 and block-code W8A16 linears, the head's exact rescoring).";
  module.attr("has_vnni") = static_cast<bool>(STENCIL_HAS_VNNI);
  module.def("int4_linear", &int4_linear,
             "x [M, K] bf16 times a tiled 4-bit (with fifth_bits, 5-bit) weight [N, K]: [M, N] bf16.",
             pybind11::arg("x"), pybind11::arg("tiles"), pybind11::arg("scales"), pybind11::arg("bases"),
             pybind11::arg("activation_bits") = 16, pybind11::arg("fifth_bits") = pybind11::none());
  module.def("block_linear", &block_linear,
             "x [M, K] bf16 times a block-code weight [N, K] (int8 codes, float32 scales and bases per block of "
             "16 or 32 inputs): [M, N] bf16.",
             pybind11::arg("x"), pybind11::arg("codes"), pybind11::arg("scales"), pybind11::arg("bases"),
             pybind11::arg("block_size"));
  module.def("rescored_logits", &rescored_logits,
             "first_pass [M, V] bf16, x [M, K] bf16, weight [V, K] bf16, count: [M, V] float32 logits, those at "
             "least each row's count-th largest first-pass logit exact.");
}
