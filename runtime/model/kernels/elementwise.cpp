// The small per-row operations of a decoder layer, each one compiled loop instead of several torch ops.
//
// In a decode step these tensors hold one row per sequence, so each torch op costs its dispatch, not
// its arithmetic: RMSNorm as torch runs it is 4 ops, RoPE 4, the gated activation 3, about a third of
// a SmolLM2 step's time outside the matmuls. Each function here is one call, and rounds as the torch
// reference does (float32 arithmetic, rounded to the activation dtype where torch rounds), so a row's
// result depends on that row only: never on the batch's row count or on threads. Built with
// -ffp-contract=off, so no product and sum fuse into an FMA that torch's separate ops would round twice.

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <torch/extension.h>

#include <cmath>
#include <cstdint>
#include <vector>

#if defined(__AVX512F__) && defined(__AVX512BF16__)
#include <immintrin.h>
#define STENCIL_VECTOR_ACTIVATIONS 1
#else
#define STENCIL_VECTOR_ACTIVATIONS 0
#endif

namespace {

constexpr int64_t kLanes = 16;  // partial sums of a row's reduction, a fixed order whatever the batch

// Rows per thread task: a decode step's few rows run on the calling thread.
constexpr int64_t kRowGrain = 16;

template <typename T>
inline T round_to(float value) {
  return static_cast<T>(value);
}

// Sum of squares of x[0..n) in a fixed order: kLanes strided partial sums, then pairwise.
inline float sum_of_squares(const float* x, int64_t n) {
  float lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) lanes[l] += x[i + l] * x[i + l];
  for (int64_t l = 0; i < n; ++i, ++l) lanes[l] += x[i] * x[i];
  for (int64_t width = kLanes / 2; width > 0; width /= 2)
    for (int64_t l = 0; l < width; ++l) lanes[l] += lanes[l + width];
  return lanes[0];
}

// Normalizes rows of x, or with `delta` (contiguous rows) rows of x + delta, whose sums, rounded as torch's
// add rounds them, go to `sums`: the residual add before a norm, without a call of its own.
template <typename T>
void rms_norm_rows(const T* x, const T* delta, T* sums, const T* weight, T* out, int64_t num_rows, int64_t dim,
                   int64_t row_stride, float eps) {
  at::parallel_for(0, num_rows, kRowGrain, [&](int64_t begin, int64_t end) {
    std::vector<float> row(dim);
    for (int64_t r = begin; r < end; ++r) {
      const T* in = x + r * row_stride;
      if (delta == nullptr) {
        for (int64_t i = 0; i < dim; ++i) row[i] = static_cast<float>(in[i]);
      } else {
        const T* d = delta + r * dim;
        T* sum = sums + r * dim;
        for (int64_t i = 0; i < dim; ++i) {
          sum[i] = round_to<T>(static_cast<float>(in[i]) + static_cast<float>(d[i]));
          row[i] = static_cast<float>(sum[i]);
        }
      }
      const float inverse = 1.0f / std::sqrt(sum_of_squares(row.data(), dim) / static_cast<float>(dim) + eps);
      T* o = out + r * dim;
      // Rounded once, as F.rms_norm rounds (transformers also rounds the normalized row before scaling:
      // in bfloat16 that double rounding moved SmolLM2's logits by ~0.1 from float32's).
      for (int64_t i = 0; i < dim; ++i) o[i] = round_to<T>(static_cast<float>(weight[i]) * (row[i] * inverse));
    }
  });
}

inline float silu(float x) { return x / (1.0f + std::exp(-x)); }

inline float gelu_tanh(float x) {
  constexpr float kBeta = 0.7978845608028654f;  // sqrt(2 / pi)
  return 0.5f * x * (1.0f + std::tanh(kBeta * (x + 0.044715f * x * x * x)));
}

// Gated activations by code: 0 SiLU, 1 GELU (tanh approximation).
template <int Kind>
inline float activation(float x) {
  return Kind == 0 ? silu(x) : gelu_tanh(x);
}

#if STENCIL_VECTOR_ACTIVATIONS

// e^x for 16 lanes: x = n ln2 + r, e^r by its degree-6 Taylor polynomial (|r| <= ln2 / 2), 2^n by scalef.
// Within 2 ulp of float32 e^x, far below the bfloat16 step the result is rounded to.
inline __m512 exp16(__m512 x) {
  x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.7f)), _mm512_set1_ps(-87.3f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.4426950408889634f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);  // ln2 in two parts: exact n * hi
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720);
  for (float c : {1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f}) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
  return _mm512_scalef_ps(p, n);
}

inline __m512 silu16(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.0f);
  return _mm512_div_ps(x, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}

inline __m512 gelu_tanh16(__m512 x) {
  // 1 + tanh(y) = 2 - 2 / (e^(2y) + 1)
  const __m512 one = _mm512_set1_ps(1.0f), two = _mm512_set1_ps(2.0f);
  const __m512 cube = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
  const __m512 y = _mm512_mul_ps(_mm512_set1_ps(0.7978845608028654f),
                                 _mm512_add_ps(x, _mm512_mul_ps(_mm512_set1_ps(0.044715f), cube)));
  const __m512 one_plus_tanh = _mm512_sub_ps(two, _mm512_div_ps(two, _mm512_add_ps(exp16(_mm512_mul_ps(two, y)), one)));
  return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), x), one_plus_tanh);
}

// 16 values as float32, and back with the activation dtype's rounding (bfloat16: to nearest even).
inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const c10::BFloat16* p) {
  return _mm512_castsi512_ps(
      _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
}
inline __m512 round16(__m512 v, float*) { return v; }
inline __m512 round16(__m512 v, c10::BFloat16*) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(v)), 16));
}
inline void store16(float* p, __m512 v) { _mm512_storeu_ps(p, v); }
inline void store16(c10::BFloat16* p, __m512 v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), (__m256i)_mm512_cvtneps_pbh(v));
}
template <int Kind>
inline __m512 activation16(__m512 x) {
  return Kind == 0 ? silu16(x) : gelu_tanh16(x);
}
#endif

template <typename T, int Kind>
void gated_rows(const T* gate_up, T* out, int64_t num_rows, int64_t width) {
  at::parallel_for(0, num_rows, kRowGrain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* gate = gate_up + r * 2 * width;
      const T* up = gate + width;
      T* o = out + r * width;
      int64_t i = 0;
#if STENCIL_VECTOR_ACTIVATIONS
      for (; i + 16 <= width; i += 16)
        store16(o + i, _mm512_mul_ps(round16(activation16<Kind>(load16(gate + i)), o), load16(up + i)));
#endif
      // act(gate) is rounded to the activation dtype before the product, as torch's two ops round.
      for (; i < width; ++i)
        o[i] = round_to<T>(static_cast<float>(round_to<T>(activation<Kind>(static_cast<float>(gate[i])))) *
                           static_cast<float>(up[i]));
    }
  });
}

template <typename T>
void rope_rows(const T* x, const T* cos, const T* signed_sin, T* out, int64_t num_tokens, int64_t num_heads,
               int64_t head_dim, int64_t token_stride) {
  const int64_t half = head_dim / 2;
  at::parallel_for(0, num_tokens, kRowGrain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const T* c = cos + t * head_dim;
      const T* s = signed_sin + t * head_dim;
      for (int64_t h = 0; h < num_heads; ++h) {
        const T* in = x + t * token_stride + h * head_dim;
        T* o = out + (t * num_heads + h) * head_dim;
        // x * cos + roll(x, half) * signed_sin, each product and the sum rounded as torch's ops round.
        int64_t i = 0;
#if STENCIL_VECTOR_ACTIVATIONS
        if (half % 16 == 0)
          for (; i < head_dim; i += 16) {
            const __m512 a = round16(_mm512_mul_ps(load16(in + i), load16(c + i)), o);
            const __m512 b = round16(_mm512_mul_ps(load16(in + (i < half ? i + half : i - half)), load16(s + i)), o);
            store16(o + i, _mm512_add_ps(a, b));
          }
#endif
        for (; i < head_dim; ++i) {
          const float rotated = static_cast<float>(in[i < half ? i + half : i - half]);
          const float a = static_cast<float>(round_to<T>(static_cast<float>(in[i]) * static_cast<float>(c[i])));
          const float b = static_cast<float>(round_to<T>(rotated * static_cast<float>(s[i])));
          o[i] = round_to<T>(a + b);
        }
      }
    }
  });
}

void check_activation_dtype(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be on the CPU");
  TORCH_CHECK(t.scalar_type() == torch::kBFloat16 || t.scalar_type() == torch::kFloat32, name,
              " must be bfloat16 or float32, not ", t.scalar_type());
}

// x [..., D] (rows may be strided, the last dimension contiguous) normalized per row: a new contiguous tensor.
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  check_activation_dtype(x, "x");
  const int64_t dim = x.size(-1);
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == dim && weight.scalar_type() == x.scalar_type() &&
                  weight.is_contiguous(),
              "weight must be a contiguous [", dim, "] tensor of x's dtype");
  torch::Tensor rows = x.reshape({-1, dim});
  if (rows.stride(1) != 1) rows = rows.contiguous();
  torch::Tensor out = torch::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  const int64_t num_rows = rows.size(0);
  if (x.scalar_type() == torch::kBFloat16)
    rms_norm_rows<c10::BFloat16>(rows.data_ptr<c10::BFloat16>(), nullptr, nullptr, weight.data_ptr<c10::BFloat16>(),
                                 out.data_ptr<c10::BFloat16>(), num_rows, dim, rows.stride(0), static_cast<float>(eps));
  else
    rms_norm_rows<float>(rows.data_ptr<float>(), nullptr, nullptr, weight.data_ptr<float>(), out.data_ptr<float>(),
                         num_rows, dim, rows.stride(0), static_cast<float>(eps));
  return out;
}

// x + delta ([T, D], contiguous, one dtype) and its rows normalized: (sum, normed), new tensors.
std::tuple<torch::Tensor, torch::Tensor> add_rms_norm(const torch::Tensor& x, const torch::Tensor& delta,
                                                      const torch::Tensor& weight, double eps) {
  check_activation_dtype(x, "x");
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous(), "x must be a contiguous [T, D] tensor, not ", x.sizes());
  TORCH_CHECK(delta.sizes() == x.sizes() && delta.scalar_type() == x.scalar_type() && delta.is_contiguous() &&
                  delta.device().is_cpu(),
              "delta must be a contiguous CPU tensor of x's shape ", x.sizes(), " and dtype, not ", delta.sizes(), " ",
              delta.scalar_type());
  const int64_t num_rows = x.size(0), dim = x.size(1);
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == dim && weight.scalar_type() == x.scalar_type() &&
                  weight.is_contiguous(),
              "weight must be a contiguous [", dim, "] tensor of x's dtype");
  torch::Tensor sum = torch::empty_like(x), out = torch::empty_like(x);
  if (x.scalar_type() == torch::kBFloat16)
    rms_norm_rows<c10::BFloat16>(x.data_ptr<c10::BFloat16>(), delta.data_ptr<c10::BFloat16>(),
                                 sum.data_ptr<c10::BFloat16>(), weight.data_ptr<c10::BFloat16>(),
                                 out.data_ptr<c10::BFloat16>(), num_rows, dim, dim, static_cast<float>(eps));
  else
    rms_norm_rows<float>(x.data_ptr<float>(), delta.data_ptr<float>(), sum.data_ptr<float>(), weight.data_ptr<float>(),
                         out.data_ptr<float>(), num_rows, dim, dim, static_cast<float>(eps));
  return {sum, out};
}

// gate_up [T, 2I] (gate columns first) to act(gate) * up [T, I]; activation 0: SiLU, 1: GELU (tanh).
torch::Tensor gated_activation(const torch::Tensor& gate_up, int64_t activation) {
  check_activation_dtype(gate_up, "gate_up");
  TORCH_CHECK(gate_up.dim() == 2 && gate_up.is_contiguous() && gate_up.size(1) % 2 == 0,
              "gate_up must be a contiguous [T, 2I] tensor");
  TORCH_CHECK(activation == 0 || activation == 1, "activation must be 0 (SiLU) or 1 (GELU tanh), not ", activation);
  const int64_t num_rows = gate_up.size(0), width = gate_up.size(1) / 2;
  torch::Tensor out = torch::empty({num_rows, width}, gate_up.options());
  if (gate_up.scalar_type() == torch::kBFloat16) {
    auto* in = gate_up.data_ptr<c10::BFloat16>();
    auto* o = out.data_ptr<c10::BFloat16>();
    activation == 0 ? gated_rows<c10::BFloat16, 0>(in, o, num_rows, width)
                    : gated_rows<c10::BFloat16, 1>(in, o, num_rows, width);
  } else {
    auto* in = gate_up.data_ptr<float>();
    auto* o = out.data_ptr<float>();
    activation == 0 ? gated_rows<float, 0>(in, o, num_rows, width)
                    : gated_rows<float, 1>(in, o, num_rows, width);
  }
  return out;
}

// x [T, N, D] (tokens may be strided, heads contiguous) rotated by cos / signed_sin [T, 1, D]: a new tensor.
torch::Tensor rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& signed_sin) {
  check_activation_dtype(x, "x");
  TORCH_CHECK(x.dim() == 3 && x.stride(2) == 1 && x.stride(1) == x.size(2), "x must be [T, N, D] with contiguous heads");
  const int64_t num_tokens = x.size(0), num_heads = x.size(1), head_dim = x.size(2);
  TORCH_CHECK(head_dim % 2 == 0, "head_dim must be even, not ", head_dim);
  for (const torch::Tensor* t : {&cos, &signed_sin})
    TORCH_CHECK(t->scalar_type() == x.scalar_type() && t->is_contiguous() && t->numel() == num_tokens * head_dim,
                "cos and signed_sin must be contiguous [T, 1, D] tensors of x's dtype");
  torch::Tensor out = torch::empty({num_tokens, num_heads, head_dim}, x.options());
  if (x.scalar_type() == torch::kBFloat16)
    rope_rows(x.data_ptr<c10::BFloat16>(), cos.data_ptr<c10::BFloat16>(), signed_sin.data_ptr<c10::BFloat16>(),
              out.data_ptr<c10::BFloat16>(), num_tokens, num_heads, head_dim, x.stride(0));
  else
    rope_rows(x.data_ptr<float>(), cos.data_ptr<float>(), signed_sin.data_ptr<float>(), out.data_ptr<float>(),
              num_tokens, num_heads, head_dim, x.stride(0));
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.doc() = "Stencil's compiled per-row decoder operations (RMSNorm, residual add, gated activations, RoPE).";
  module.def("rms_norm", &rms_norm, "x [..., D] / rms(x) * weight, per row.");
  module.def("add_rms_norm", &add_rms_norm, "(x + delta, rms_norm(x + delta)) for x, delta [T, D].");
  module.def("gated_activation", &gated_activation, "gate_up [T, 2I] to act(gate) * up [T, I].");
  module.def("rope", &rope, "x [T, N, D] rotated by cos / signed_sin [T, 1, D].");
}
