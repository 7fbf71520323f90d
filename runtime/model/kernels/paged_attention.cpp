// Batch-invariant attention of new tokens over the paged KV cache, for decode and draft-verify passes.
//
// Each new token t has a sequence (a row of the [B, L] slot table) and a position p; it attends over
// its sequence's positions [max(0, p - window + 1), p], reading K/V in place from the cache
// ([num_slots, 2, KVH, D]) through the slot table: no gather, no padding, no mask. The G query heads
// that share a K/V head go together, so one pass over that head's K and V serves all of them.
//
// Why a kernel of its own: every float operation a row's output goes through depends only on that row
// (its query, its position, its sequence's cached K/V). Batch size, other sequences' lengths, how many
// new tokens the pass brings and the thread count change nothing, so a k-token verify pass is bitwise
// k one-token decode steps and a batched step is bitwise single steps. To keep it so:
//   * one thread computes a whole (token, K/V head) item; threads only split items;
//   * q.k sums in 16 fixed lanes (element d into lane d % 16) reduced by a fixed tree;
//   * softmax: exact max, an element-wise exp, the denominator summed in position order;
//   * the V sum accumulates position after position, element-wise (no reduction across elements);
//   * no -ffast-math, so the compiler may not reassociate any of these sums.
// Scores, softmax and the V sum are float32 whatever the cache dtype; the output is rounded once.
// The 16 lanes are GCC/Clang vector extensions: element-wise, in a fixed order, on any target's SIMD.

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <torch/extension.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <type_traits>
#include <vector>

namespace {

constexpr int64_t kLanes = 16;
using Lanes = float __attribute__((vector_size(kLanes * sizeof(float))));
using Ints = int32_t __attribute__((vector_size(kLanes * sizeof(int32_t))));
using Halves = uint16_t __attribute__((vector_size(kLanes * sizeof(uint16_t))));
using Words = uint32_t __attribute__((vector_size(kLanes * sizeof(uint32_t))));

// Positions ahead whose K/V rows are prefetched: between decode steps the model's weights evict the
// cache, and a row's load would otherwise wait on memory before the next row's is even issued.
constexpr int64_t kPrefetchDistance = 16;
constexpr int64_t kCacheLine = 64;

// Multiply-adds an item should hold before splitting items over threads pays for waking them.
constexpr int64_t kWorkPerChunk = 1 << 18;

inline Lanes load(const float* p) {
  Lanes v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline Lanes load(const c10::BFloat16* p) {  // bfloat16 is float32's upper half
  Halves halves;
  std::memcpy(&halves, p, sizeof(halves));
  const Words words = __builtin_convertvector(halves, Words) << 16;
  Lanes v;
  std::memcpy(&v, &words, sizeof(v));
  return v;
}

// Elements [0, n) of p (n <= 16), zeros after.
template <typename scalar_t>
inline Lanes load(const scalar_t* p, int64_t n) {
  if (n == kLanes) return load(p);
  scalar_t padded[kLanes] = {};
  std::copy(p, p + n, padded);
  return load(padded);
}

// A head row of D elements as ceil(D / 16) lane groups.
template <typename scalar_t>
inline void load_row(const scalar_t* row, int64_t head_dim, Lanes* out) {
  for (int64_t d = 0; d < head_dim; d += kLanes) out[d / kLanes] = load(row + d, std::min(kLanes, head_dim - d));
}

inline void prefetch(const void* row, int64_t num_bytes) {
  for (int64_t offset = 0; offset < num_bytes; offset += kCacheLine)
    __builtin_prefetch(static_cast<const char*>(row) + offset);
}

// Lanes summed by a fixed tree: lane l += lane l + w for w = 8, 4, 2, 1 (in registers where the compiler
// has vector shuffles, through memory otherwise: the same sums either way).
inline float reduce(Lanes v) {
#if defined(__has_builtin) && __has_builtin(__builtin_shufflevector)
  using Lanes8 = float __attribute__((vector_size(8 * sizeof(float))));
  using Lanes4 = float __attribute__((vector_size(4 * sizeof(float))));
  using Lanes2 = float __attribute__((vector_size(2 * sizeof(float))));
  const Lanes8 eight = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                       __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const Lanes4 four = __builtin_shufflevector(eight, eight, 0, 1, 2, 3) +
                      __builtin_shufflevector(eight, eight, 4, 5, 6, 7);
  const Lanes2 two = __builtin_shufflevector(four, four, 0, 1) + __builtin_shufflevector(four, four, 2, 3);
  return two[0] + two[1];
#else
  float lanes[kLanes];
  std::memcpy(lanes, &v, sizeof(lanes));
  for (int64_t width = kLanes / 2; width >= 1; width /= 2)
    for (int64_t l = 0; l < width; ++l) lanes[l] += lanes[l + width];
  return lanes[0];
#endif
}

// exp(x) for x <= 0, element-wise (Cephes' expf: ~1 ulp); below -87, where exp(x) < 2^-125, gives 0.
inline Lanes exp_nonpositive(Lanes x) {
  const Ints underflows = x < -87.0f;
  x = underflows ? Lanes{} - 87.0f : x;
  const Ints n = __builtin_convertvector(x * 1.44269504088896341f - 0.5f, Ints);  // round(x / ln 2), x <= 0
  const Lanes k = __builtin_convertvector(n, Lanes);
  const Lanes r = (x - k * 0.693359375f) - k * -2.12194440e-4f;  // x - k ln 2, ln 2 split in two
  Lanes p = Lanes{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const Lanes y = p * r * r + r + 1.0f;
  const Ints exponent = (n + 127) << 23;  // 2^n
  Lanes scale;
  std::memcpy(&scale, &exponent, sizeof(scale));
  return underflows ? Lanes{} : y * scale;
}

// First position a query at `position` sees: the window's start, or 0 without a window.
inline int64_t window_start(int64_t position, std::optional<int64_t> window) {
  return window ? std::max<int64_t>(0, position - *window + 1) : 0;
}

// Scratch of one thread, sized for the call's largest item (C = ceil(D / 16) lane groups per head row).
struct Scratch {
  std::vector<Lanes> queries;       // [G, C]
  std::vector<Lanes> row;           // [C]: one K or V row
  std::vector<float> weights;       // [G, n + 16]: scores, then exp(score - max)
  std::vector<Lanes> sums;          // [G, C]: the weighted V sums
  std::vector<float> denominators;  // [G]: the softmax denominators
};

// What every item of one call shares.
template <typename scalar_t>
struct Pass {
  const scalar_t* queries;  // token t's heads at queries + t * query_stride, packed [H, D]
  int64_t query_stride;
  const scalar_t* cache;      // [num_slots, 2, KVH, D]
  const int64_t* slot_table;  // [B, L]
  const int64_t* sequences;   // [T]
  const int64_t* positions;   // [T]
  scalar_t* out;              // [T, H * D]
  int64_t num_heads, num_kv_heads, head_dim, max_context_len;
  std::optional<int64_t> window;
  float scale;
};

// Item = (token, K/V head): the attention of that token's G query heads of this K/V head.
template <typename scalar_t>
void attend(const Pass<scalar_t>& pass, int64_t item, Scratch& scratch) {
  const int64_t head_dim = pass.head_dim, group = pass.num_heads / pass.num_kv_heads;
  const int64_t num_chunks = (head_dim + kLanes - 1) / kLanes;
  const int64_t token = item / pass.num_kv_heads, kv_head = item % pass.num_kv_heads;
  const int64_t position = pass.positions[token];
  const int64_t first = window_start(position, pass.window);
  const int64_t count = position - first + 1;
  const int64_t stride = count + kLanes;  // a head's weights, room for exp's last lane group
  const int64_t* slots = pass.slot_table + pass.sequences[token] * pass.max_context_len + first;
  const int64_t slot_stride = 2 * pass.num_kv_heads * head_dim;  // elements per cache slot (K and V)
  const scalar_t* keys = pass.cache + kv_head * head_dim;
  const scalar_t* values = pass.cache + (pass.num_kv_heads + kv_head) * head_dim;

  Lanes* q = scratch.queries.data();
  Lanes* row = scratch.row.data();
  float* weights = scratch.weights.data();
  Lanes* sums = scratch.sums.data();
  float* denominators = scratch.denominators.data();
  const scalar_t* token_queries = pass.queries + token * pass.query_stride + kv_head * group * head_dim;
  for (int64_t g = 0; g < group; ++g) load_row(token_queries + g * head_dim, head_dim, q + g * num_chunks);

  const int64_t row_bytes = head_dim * static_cast<int64_t>(sizeof(scalar_t));
  for (int64_t j = 0; j < std::min(count, kPrefetchDistance); ++j) {
    prefetch(keys + slots[j] * slot_stride, row_bytes);
    prefetch(values + slots[j] * slot_stride, row_bytes);
  }
  for (int64_t j = 0; j < count; ++j) {
    if (j + kPrefetchDistance < count) {  // V rows too: the V pass then finds them in cache
      prefetch(keys + slots[j + kPrefetchDistance] * slot_stride, row_bytes);
      prefetch(values + slots[j + kPrefetchDistance] * slot_stride, row_bytes);
    }
    load_row(keys + slots[j] * slot_stride, head_dim, row);
    for (int64_t g = 0; g < group; ++g) {
      Lanes dot{};
      for (int64_t c = 0; c < num_chunks; ++c) dot += q[g * num_chunks + c] * row[c];
      weights[g * stride + j] = pass.scale * reduce(dot);
    }
  }
  for (int64_t g = 0; g < group; ++g) {
    float* w = weights + g * stride;
    float max_score = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < count; ++j) max_score = std::max(max_score, w[j]);
    for (int64_t j = 0; j < count; j += kLanes) {
      const Lanes e = exp_nonpositive(load(w + j) - max_score);  // lanes past count: scratch, never read
      std::memcpy(w + j, &e, sizeof(e));
    }
    float denominator = 0.0f;
    for (int64_t j = 0; j < count; ++j) denominator += w[j];
    denominators[g] = denominator;
  }
  std::fill(sums, sums + group * num_chunks, Lanes{});
  for (int64_t j = 0; j < count; ++j) {
    load_row(values + slots[j] * slot_stride, head_dim, row);
    for (int64_t g = 0; g < group; ++g) {
      const float w = weights[g * stride + j];
      for (int64_t c = 0; c < num_chunks; ++c) sums[g * num_chunks + c] += w * row[c];
    }
  }
  scalar_t* dst = pass.out + (token * pass.num_heads + kv_head * group) * head_dim;
  for (int64_t g = 0; g < group; ++g) {
    float out[kLanes];
    for (int64_t c = 0; c < num_chunks; ++c) {
      const Lanes normalized = sums[g * num_chunks + c] / denominators[g];
      std::memcpy(out, &normalized, sizeof(out));
      for (int64_t l = 0; l < kLanes && c * kLanes + l < head_dim; ++l)
        dst[g * head_dim + c * kLanes + l] = static_cast<scalar_t>(out[l]);
    }
  }
}

// queries [T, H, D] over the cache [num_slots, 2, KVH, D]: [T, H * D] in the queries' dtype.
torch::Tensor paged_attention(const torch::Tensor& queries, const torch::Tensor& kv_cache,
                              const torch::Tensor& slot_table, const torch::Tensor& sequences,
                              const torch::Tensor& positions, double scale, std::optional<int64_t> window) {
  TORCH_CHECK(queries.device().is_cpu() && kv_cache.device().is_cpu(), "paged_attention runs on CPU tensors only");
  TORCH_CHECK(queries.dim() == 3, "queries must be [T, H, D], not ", queries.sizes());
  TORCH_CHECK(kv_cache.dim() == 4 && kv_cache.size(1) == 2, "kv_cache must be [num_slots, 2, KVH, D], not ",
              kv_cache.sizes());
  TORCH_CHECK(kv_cache.is_contiguous(), "kv_cache must be contiguous");
  TORCH_CHECK(queries.scalar_type() == kv_cache.scalar_type(), "queries (", queries.scalar_type(),
              ") and kv_cache (", kv_cache.scalar_type(), ") must have the same dtype");
  TORCH_CHECK(queries.scalar_type() == torch::kBFloat16 || queries.scalar_type() == torch::kFloat32,
              "paged_attention supports bfloat16 and float32, not ", queries.scalar_type());
  const int64_t num_tokens = queries.size(0), num_heads = queries.size(1), head_dim = queries.size(2);
  const int64_t num_slots = kv_cache.size(0), num_kv_heads = kv_cache.size(2);
  TORCH_CHECK(head_dim > 0, "head size must be positive");
  TORCH_CHECK(kv_cache.size(3) == head_dim, "kv_cache head size ", kv_cache.size(3), " differs from the queries' ",
              head_dim);
  TORCH_CHECK(num_kv_heads > 0 && num_heads % num_kv_heads == 0, "query heads (", num_heads,
              ") must be a multiple of K/V heads (", num_kv_heads, ")");
  for (const torch::Tensor* t : {&slot_table, &sequences, &positions})
    TORCH_CHECK(t->scalar_type() == torch::kInt64 && t->is_contiguous() && t->device().is_cpu(),
                "slot_table, sequences and positions must be contiguous int64 CPU tensors");
  TORCH_CHECK(!window || *window >= 1, "window must be at least 1 position, not ", window.value_or(0));
  TORCH_CHECK(slot_table.dim() == 2, "slot_table must be [B, L], not ", slot_table.sizes());
  TORCH_CHECK(sequences.dim() == 1 && sequences.size(0) == num_tokens && positions.dim() == 1 &&
                  positions.size(0) == num_tokens,
              "sequences and positions must be [T] with T = ", num_tokens);
  const int64_t num_seqs = slot_table.size(0), max_context_len = slot_table.size(1);
  const int64_t* table = slot_table.data_ptr<int64_t>();
  const int64_t* seq = sequences.data_ptr<int64_t>();
  const int64_t* pos = positions.data_ptr<int64_t>();
  int64_t max_count = 0;
  for (int64_t t = 0; t < num_tokens; ++t) {
    TORCH_CHECK(seq[t] >= 0 && seq[t] < num_seqs, "token ", t, " names sequence ", seq[t], " of ", num_seqs);
    TORCH_CHECK(pos[t] >= 0 && pos[t] < max_context_len, "token ", t, " is at position ", pos[t],
                " outside the slot table's ", max_context_len);
    const int64_t first = window_start(pos[t], window);
    for (int64_t j = first; j <= pos[t]; ++j) {
      const int64_t slot = table[seq[t] * max_context_len + j];
      TORCH_CHECK(slot >= 0 && slot < num_slots, "position ", j, " of sequence ", seq[t], " maps to slot ", slot,
                  " outside the cache's ", num_slots);
    }
    max_count = std::max(max_count, pos[t] - first + 1);
  }

  // Tokens may be strided (a slice of the fused q/k rows); each token's H * D values must be packed.
  const bool packed_heads = queries.stride(2) == 1 && queries.stride(1) == head_dim;
  const torch::Tensor q = packed_heads ? queries : queries.contiguous();
  torch::Tensor out = torch::empty({num_tokens, num_heads * head_dim}, queries.options());
  const int64_t group = num_heads / num_kv_heads;
  const int64_t work_per_item = 2 * group * max_count * head_dim;
  const int64_t grain = std::max<int64_t>(1, kWorkPerChunk / std::max<int64_t>(1, work_per_item));
  const auto run = [&](auto* typed) {
    using scalar_t = std::remove_pointer_t<decltype(typed)>;
    const Pass<scalar_t> pass{q.data_ptr<scalar_t>(), q.stride(0), kv_cache.data_ptr<scalar_t>(), table, seq, pos,
                              out.data_ptr<scalar_t>(), num_heads, num_kv_heads, head_dim, max_context_len,
                              window, static_cast<float>(scale)};
    at::parallel_for(0, num_tokens * num_kv_heads, grain, [&](int64_t begin, int64_t end) {
      const int64_t num_chunks = (head_dim + kLanes - 1) / kLanes;
      Scratch scratch{std::vector<Lanes>(group * num_chunks), std::vector<Lanes>(num_chunks),
                      std::vector<float>(group * (max_count + kLanes)), std::vector<Lanes>(group * num_chunks),
                      std::vector<float>(group)};
      for (int64_t item = begin; item < end; ++item) attend(pass, item, scratch);
    });
  };
  if (q.scalar_type() == torch::kBFloat16)
    run(static_cast<c10::BFloat16*>(nullptr));
  else
    run(static_cast<float*>(nullptr));
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.doc() = "Stencil's compiled CPU attention: batch-invariant decode/verify attention over the paged cache.";
  module.def("paged_attention", &paged_attention, pybind11::arg("queries"), pybind11::arg("kv_cache"),
             pybind11::arg("slot_table"), pybind11::arg("sequences"), pybind11::arg("positions"),
             pybind11::arg("scale"), pybind11::arg("window"),
             "Attention of new tokens [T, H, D] over their sequences' cached K/V: [T, H * D].");
}
