// W4A16 linear layers for CPU: 4-bit weight codes times int16 activations quantized per group of 32.
//
// Weights are Int4Linear's own buffers, read in place: `nibbles` [N, K / 2] (the code of input 2j in
// the low nibble of byte j, of input 2j + 1 in the high one), `scales` and `bases` [N, K / 32] bfloat16,
// so a weight is `q * scale + base`. Per output n and row m:
//
//   y[m, n] = sum_g scale[n, g] * a_scale[m, g] * sum_{k in g} q[n, k] * a[m, k]   (integer dot products)
//           + sum_g base[n, g] * x_sum[m, g]                                         (x_sum exact, in float)
//
// The integer dot products run on AVX-512 VNNI (`vpdpwssd`), one group (32 inputs) per instruction.
// Activations are int16 (a step of absmax / 32767 per group), not int8 as llama.cpp's Q8_1: on SmolLM2
// int8 activations tripled the decode path's KL divergence from fp32, int16 ones are as exact as
// bfloat16. They are quantized once per call into the order the weights unpack in (a group's even
// inputs, then its odd ones), so weights need no repacking. Each
// weight column is unpacked once per block of up to 8 rows, so a decode batch of 8 reads and unpacks
// the weights once; threads split the output columns (torch's pool, so torch.get_num_threads()).

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <torch/extension.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#include <immintrin.h>
#define STENCIL_HAS_VNNI 1
#else
#define STENCIL_HAS_VNNI 0
#endif

namespace {

constexpr int64_t kGroupSize = 32;
constexpr int64_t kMaxRowBlock = 8;             // rows sharing one unpacked weight column
constexpr int64_t kColumnTile = 64;             // columns kept in cache while all row blocks pass over them

// Activations of M rows quantized for the kernel.
struct QuantizedActivations {
  std::vector<int16_t> codes;  // [M, K]: per group, its 16 even inputs then its 16 odd ones
  std::vector<float> scales;   // [M, K / 32]: each group's step
  std::vector<float> sums;     // [M, K / 32]: exact sum of each group's inputs
};

inline float bf16_to_float(uint16_t bits) {
  uint32_t widened = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &widened, sizeof(value));
  return value;
}

#if STENCIL_HAS_VNNI

// One group of 32 bfloat16 inputs: its int16 codes (even inputs first), step and exact sum.
inline void quantize_group(const uint16_t* x, int16_t* codes, float* scale, float* sum) {
  // Each 32-bit lane holds inputs 2j (low half) and 2j + 1 (high half): shifting or masking widens them.
  __m512i packed = _mm512_loadu_si512(x);
  __m512 evens = _mm512_castsi512_ps(_mm512_slli_epi32(packed, 16));
  __m512 odds = _mm512_castsi512_ps(_mm512_and_si512(packed, _mm512_set1_epi32(static_cast<int>(0xFFFF0000u))));
  float absmax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(evens), _mm512_abs_ps(odds)));
  float step = absmax / 32767.0f;
  __m512 inverse = _mm512_set1_ps(step > 0.0f ? 1.0f / step : 0.0f);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes),
                      _mm512_cvtsepi32_epi16(_mm512_cvtps_epi32(_mm512_mul_ps(evens, inverse))));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes + 16),
                      _mm512_cvtsepi32_epi16(_mm512_cvtps_epi32(_mm512_mul_ps(odds, inverse))));
  *scale = step;
  *sum = _mm512_reduce_add_ps(_mm512_add_ps(evens, odds));
}

void quantize_activations(const uint16_t* x, int64_t num_rows, int64_t num_inputs, QuantizedActivations& out) {
  const int64_t num_groups = num_inputs / kGroupSize;
  out.codes.resize(num_rows * num_inputs);
  out.scales.resize(num_rows * num_groups);
  out.sums.resize(num_rows * num_groups);
  for (int64_t i = 0; i < num_rows * num_groups; ++i)
    quantize_group(x + i * kGroupSize, out.codes.data() + i * kGroupSize, out.scales.data() + i, out.sums.data() + i);
}

// Columns n .. n + C - 1 for rows m0 .. m0 + M - 1, written to out (row stride num_columns).
template <int M, int C>
inline void dot_tile(const uint8_t* nibbles, const uint16_t* scales, const uint16_t* bases,
                     const QuantizedActivations& act, int64_t m0, int64_t n, int64_t num_inputs,
                     int64_t num_columns, c10::BFloat16* out) {
  const int64_t num_groups = num_inputs / kGroupSize;
  const __m256i low_nibbles = _mm256_set1_epi16(0x0F);
  __m512 acc[C][M];
  for (int c = 0; c < C; ++c)
    for (int m = 0; m < M; ++m) acc[c][m] = _mm512_setzero_ps();
  for (int64_t g = 0; g < num_groups; ++g) {
    __m512i a_codes[M];
    for (int m = 0; m < M; ++m) a_codes[m] = _mm512_loadu_si512(act.codes.data() + (m0 + m) * num_inputs + g * kGroupSize);
    for (int c = 0; c < C; ++c) {
      const int64_t column = n + c;
      __m256i bytes = _mm256_cvtepu8_epi16(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(nibbles + column * num_inputs / 2 + g * 16)));
      // Codes of the 16 even inputs, then of the 16 odd ones: the activations' order.
      __m512i codes = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_and_si256(bytes, low_nibbles)),
                                         _mm256_srli_epi16(bytes, 4), 1);
      __m512 w_scale = _mm512_set1_ps(bf16_to_float(scales[column * num_groups + g]));
      for (int m = 0; m < M; ++m) {
        __m512i dot = _mm512_dpwssd_epi32(_mm512_setzero_si512(), codes, a_codes[m]);
        __m512 scale = _mm512_mul_ps(w_scale, _mm512_set1_ps(act.scales[(m0 + m) * num_groups + g]));
        acc[c][m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc[c][m]);
      }
    }
  }
  for (int c = 0; c < C; ++c) {
    const uint16_t* column_bases = bases + (n + c) * num_groups;
    for (int m = 0; m < M; ++m) {
      const float* sums = act.sums.data() + (m0 + m) * num_groups;
      __m512 offset = _mm512_setzero_ps();
      for (int64_t g = 0; g < num_groups; g += 16) {
        __mmask16 mask = num_groups - g >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (num_groups - g)) - 1);
        __m512 b = _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, column_bases + g)), 16));
        offset = _mm512_fmadd_ps(b, _mm512_maskz_loadu_ps(mask, sums + g), offset);
      }
      out[(m0 + m) * num_columns + n + c] = c10::BFloat16(_mm512_reduce_add_ps(_mm512_add_ps(acc[c][m], offset)));
    }
  }
}

template <int M>
void dot_rows(const uint8_t* nibbles, const uint16_t* scales, const uint16_t* bases, const QuantizedActivations& act,
              int64_t m0, int64_t n_begin, int64_t n_end, int64_t num_inputs, int64_t num_columns,
              c10::BFloat16* out) {
  // Several independent accumulators per weight load hide the FMA latency when rows are few.
  constexpr int C = M <= 2 ? 4 : (M <= 4 ? 2 : 1);
  for (int64_t n = n_begin; n < n_end; n += C)
    dot_tile<M, C>(nibbles, scales, bases, act, m0, n, num_inputs, num_columns, out);
}

void dot_block(int64_t rows, const uint8_t* nibbles, const uint16_t* scales, const uint16_t* bases,
               const QuantizedActivations& act, int64_t m0, int64_t n_begin, int64_t n_end, int64_t num_inputs,
               int64_t num_columns, c10::BFloat16* out) {
  switch (rows) {
#define STENCIL_ROWS(R) \
  case R:               \
    return dot_rows<R>(nibbles, scales, bases, act, m0, n_begin, n_end, num_inputs, num_columns, out);
    STENCIL_ROWS(1) STENCIL_ROWS(2) STENCIL_ROWS(3) STENCIL_ROWS(4)
    STENCIL_ROWS(5) STENCIL_ROWS(6) STENCIL_ROWS(7) STENCIL_ROWS(8)
#undef STENCIL_ROWS
  }
}

#endif  // STENCIL_HAS_VNNI

// x [M, K] bfloat16 times the 4-bit weight [N, K] given by (nibbles, scales, bases): [M, N] bfloat16.
torch::Tensor int4_linear(const torch::Tensor& x, const torch::Tensor& nibbles, const torch::Tensor& scales,
                          const torch::Tensor& bases) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kBFloat16 && x.is_contiguous(),
              "x must be a contiguous 2-D bfloat16 tensor");
  const int64_t num_rows = x.size(0), num_inputs = x.size(1), num_columns = nibbles.size(0);
  TORCH_CHECK(num_inputs % kGroupSize == 0, "inputs must be a multiple of 32, not ", num_inputs);
  TORCH_CHECK(nibbles.scalar_type() == torch::kUInt8 && nibbles.is_contiguous() && nibbles.dim() == 2 &&
                  nibbles.size(1) * 2 == num_inputs,
              "nibbles must be contiguous uint8 [N, K / 2]");
  TORCH_CHECK(num_columns % 4 == 0, "output columns must be a multiple of 4, not ", num_columns);
  for (const torch::Tensor* t : {&scales, &bases})
    TORCH_CHECK(t->scalar_type() == torch::kBFloat16 && t->is_contiguous() &&
                    t->numel() == num_columns * (num_inputs / kGroupSize),
                "scales and bases must be contiguous bfloat16 with N * K / 32 elements");
  torch::Tensor out = torch::empty({num_rows, num_columns}, x.options());
#if STENCIL_HAS_VNNI
  static thread_local QuantizedActivations act;
  quantize_activations(reinterpret_cast<const uint16_t*>(x.data_ptr()), num_rows, num_inputs, act);
  const auto* w = nibbles.data_ptr<uint8_t>();
  const auto* s = reinterpret_cast<const uint16_t*>(scales.data_ptr());
  const auto* b = reinterpret_cast<const uint16_t*>(bases.data_ptr());
  auto* y = out.data_ptr<c10::BFloat16>();
  const QuantizedActivations& shared = act;
  // Units of 4 columns, so every tile width (4, 2, 1) divides a thread's range.
  at::parallel_for(0, num_columns / 4, 16, [&](int64_t begin, int64_t end) {
    for (int64_t tile = begin * 4; tile < end * 4; tile += kColumnTile) {
      const int64_t tile_end = std::min(tile + kColumnTile, end * 4);
      for (int64_t m0 = 0; m0 < num_rows; m0 += kMaxRowBlock)
        dot_block(std::min(kMaxRowBlock, num_rows - m0), w, s, b, shared, m0, tile, tile_end, num_inputs,
                  num_columns, y);
    }
  });
#else
  TORCH_CHECK(false, "this build of the kernels has no AVX-512 VNNI code path");
#endif
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.doc() = "Stencil's compiled CPU kernels (W4A8 quantized linear).";
  module.attr("has_vnni") = static_cast<bool>(STENCIL_HAS_VNNI);
  module.def("int4_linear", &int4_linear, "x [M, K] bf16 times a 4-bit weight [N, K]: [M, N] bf16.");
}
