// Batch-invariant attention of new tokens over the paged KV cache, for decode and draft-verify passes.
//
// One call first stores the new tokens' K/V at their slots, then each new token t, of a sequence (a row
// of the [B, L] slot table) at position p, attends over its sequence's positions
// [max(0, p - window + 1), p], reading K/V in place from the cache ([num_slots, 2, KVH, D]) through the
// slot table: no gather, no padding, no mask. The G query heads that share a K/V head go together, so one
// pass over that head's K and V serves all of them.
//
// Why a kernel of its own: every float operation a row's output goes through depends only on that row
// (its query, its position, its sequence's cached K/V). Batch size, other sequences' lengths, how many
// new tokens the pass brings and the thread count change nothing, so a k-token verify pass is bitwise
// k one-token decode steps and a batched step is bitwise single steps. To keep it so:
//   * one thread computes a whole (token, K/V head) item; threads only split items;
//   * q.k sums in 16 fixed lanes (element d into lane d % 16) reduced by a fixed tree; 16 positions'
//     trees run side by side in shuffles, each position's lanes summed in the same order as alone;
//   * softmax: exact max, an element-wise exp, the denominator summed in 16 lanes (position j into
//     lane j % 16) reduced by the same tree;
//   * the V sum accumulates position after position, element-wise (no reduction across elements);
//     the heads sharing a K/V head share each V row's load, which changes no sum;
//   * no -ffast-math, so the compiler may not reassociate any of these sums.
// Scores, softmax and the V sum are float32 whatever the cache dtype; the output is rounded once.
// The 16 lanes are GCC/Clang vector extensions: element-wise, in a fixed order, on any target's SIMD.
// (q.k by AVX512-BF16's `vdpbf16ps` on the cached bfloat16 rows, no widening, was 1.02-1.06x per call at
// 32-1500 cached tokens on SmolLM2's heads: not kept.)

#include <ATen/Parallel.h>
#include <immintrin.h>
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
// Lane groups of V sums kept at once: the query heads of a K/V head that fit share each V row's load.
constexpr int64_t kSumLanes = 16;

// Multiply-adds a thread should get before splitting a call over threads pays for waking them.
constexpr int64_t kWorkPerThread = 1 << 17;  // ~10 us

inline Lanes load(const float* p) {
  Lanes v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline Lanes load(const c10::BFloat16* p) {  // bfloat16 is float32's upper half
#ifdef __AVX512F__  // one widening load (the generic code compiles to four instructions more)
  const __m256i halves = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  const Words words = reinterpret_cast<Words>(_mm512_maskz_cvtepu16_epi32(0xFFFF, halves)) << 16;
  return reinterpret_cast<Lanes>(words);
#else
  Halves halves;
  std::memcpy(&halves, p, sizeof(halves));
  const Words words = __builtin_convertvector(halves, Words) << 16;
  Lanes v;
  std::memcpy(&v, &words, sizeof(v));
  return v;
#endif
}

// Elements [0, n) of p (n <= 16), zeros after.
template <typename scalar_t>
inline Lanes load(const scalar_t* p, int64_t n) {
  if (n == kLanes) return load(p);
  scalar_t padded[kLanes] = {};
  std::copy(p, p + n, padded);
  return load(padded);
}

// A head row of D elements as C = ceil(D / 16) lane groups. kChunks > 0: C is known to be kChunks and
// D = 16 C (loops unroll, no partial group); 0: both at run time.
template <int64_t kChunks, typename scalar_t>
inline void load_row(const scalar_t* row, int64_t head_dim, Lanes* out) {
  if constexpr (kChunks > 0) {
    for (int64_t c = 0; c < kChunks; ++c) out[c] = load(row + c * kLanes);
  } else {
    for (int64_t d = 0; d < head_dim; d += kLanes) out[d / kLanes] = load(row + d, std::min(kLanes, head_dim - d));
  }
}

inline void prefetch(const void* row, int64_t num_bytes) {
  for (int64_t offset = 0; offset < num_bytes; offset += kCacheLine)
    __builtin_prefetch(static_cast<const char*>(row) + offset);
}

#if defined(__has_builtin)
#if __has_builtin(__builtin_shufflevector)
#define STENCIL_HAS_SHUFFLEVECTOR 1
#endif
#endif

// Lanes summed by a fixed tree: lane l += lane l + w for w = 8, 4, 2, 1.
inline float reduce(Lanes v) {
  float lanes[kLanes];
  std::memcpy(lanes, &v, sizeof(lanes));
  for (int64_t width = kLanes / 2; width >= 1; width /= 2)
    for (int64_t l = 0; l < width; ++l) lanes[l] += lanes[l + width];
  return lanes[0];
}

// Lane p of the result: `reduce(v[p])`, the same sums, for 16 vectors at once. Each level adds the
// halves of every vector's live lanes and packs two vectors' results into one, so the 16 trees share
// 15 additions of full vectors instead of 64 of partial ones.
inline Lanes reduce_16(const Lanes* v) {
#ifdef STENCIL_HAS_SHUFFLEVECTOR
  Lanes eights[8], fours[4], twos[2];  // vector i: the live lanes of 2, 4, 8 positions
  for (int i = 0; i < 8; ++i)
    eights[i] = __builtin_shufflevector(v[2 * i], v[2 * i + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
                __builtin_shufflevector(v[2 * i], v[2 * i + 1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29,
                                        30, 31);
  for (int i = 0; i < 4; ++i)
    fours[i] =
        __builtin_shufflevector(eights[2 * i], eights[2 * i + 1], 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25,
                                26, 27) +
        __builtin_shufflevector(eights[2 * i], eights[2 * i + 1], 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29,
                                30, 31);
  for (int i = 0; i < 2; ++i)
    twos[i] = __builtin_shufflevector(fours[2 * i], fours[2 * i + 1], 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24,
                                      25, 28, 29) +
              __builtin_shufflevector(fours[2 * i], fours[2 * i + 1], 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26,
                                      27, 30, 31);
  return __builtin_shufflevector(twos[0], twos[1], 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30) +
         __builtin_shufflevector(twos[0], twos[1], 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
#else
  Lanes out;
  for (int64_t p = 0; p < kLanes; ++p) out[p] = reduce(v[p]);
  return out;
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

// Scores w[0, n) -> exp(w - max); returns their sum, position j into lane j % 16, reduced by `reduce`.
inline float softmax_numerators(float* w, int64_t n) {
  const int64_t full = n - n % kLanes;
  float max_score = -std::numeric_limits<float>::infinity();
  if (full > 0) {  // the max is exact: any order gives the same
    Lanes lanes = load(w);
    for (int64_t j = kLanes; j < full; j += kLanes) {
      const Lanes v = load(w + j);
      lanes = lanes > v ? lanes : v;
    }
    for (int64_t l = 0; l < kLanes; ++l) max_score = std::max(max_score, lanes[l]);
  }
  for (int64_t j = full; j < n; ++j) max_score = std::max(max_score, w[j]);
  Lanes sum{};
  for (int64_t j = 0; j < n; j += kLanes) {
    const Lanes e = exp_nonpositive(load(w + j) - max_score);  // lanes past n: scratch, never read
    std::memcpy(w + j, &e, sizeof(e));
    sum += j < full ? e : load(w + j, n - j);
  }
  return reduce(sum);
}

// First position a query at `position` sees: the window's start, or 0 without a window.
inline int64_t window_start(int64_t position, std::optional<int64_t> window) {
  return window ? std::max<int64_t>(0, position - *window + 1) : 0;
}

// Scratch of one thread, sized for the call's largest item (C = ceil(D / 16) lane groups per head row).
struct Scratch {
  std::vector<Lanes> queries;       // [G, C]
  std::vector<Lanes> row;           // [C]: one K or V row, where C is known only at run time
  std::vector<Lanes> dots;          // [G, 16]: one block of positions' q.k lane sums
  std::vector<float> weights;       // [G, n + 16]: scores, then exp(score - max)
  std::vector<Lanes> sums;          // [max(16, C)]: a set of heads' weighted V sums, where C is known only at run time
  std::vector<float> denominators;  // [G]: each head's softmax denominator
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
template <int64_t kChunks, typename scalar_t>
void attend(const Pass<scalar_t>& pass, int64_t item, Scratch& scratch) {
  const int64_t head_dim = pass.head_dim, group = pass.num_heads / pass.num_kv_heads;
  const int64_t num_chunks = kChunks > 0 ? kChunks : (head_dim + kLanes - 1) / kLanes;
  const int64_t token = item / pass.num_kv_heads, kv_head = item % pass.num_kv_heads;
  const int64_t position = pass.positions[token];
  const int64_t first = window_start(position, pass.window);
  const int64_t count = position - first + 1;
  const int64_t stride = count + kLanes;  // a head's weights, room for the last block's lanes
  const int64_t* slots = pass.slot_table + pass.sequences[token] * pass.max_context_len + first;
  const int64_t slot_stride = 2 * pass.num_kv_heads * head_dim;  // elements per cache slot (K and V)
  const scalar_t* keys = pass.cache + kv_head * head_dim;
  const scalar_t* values = pass.cache + (pass.num_kv_heads + kv_head) * head_dim;

  Lanes* q = scratch.queries.data();
  Lanes* dots = scratch.dots.data();
  float* weights = scratch.weights.data();
  Lanes known_row[kChunks > 0 ? kChunks : 1];  // in registers
  Lanes* row = kChunks > 0 ? known_row : scratch.row.data();
  const scalar_t* token_queries = pass.queries + token * pass.query_stride + kv_head * group * head_dim;
  for (int64_t g = 0; g < group; ++g) load_row<kChunks>(token_queries + g * head_dim, head_dim, q + g * num_chunks);

  const int64_t row_bytes = head_dim * static_cast<int64_t>(sizeof(scalar_t));
  for (int64_t j = 0; j < std::min(count, kPrefetchDistance); ++j) {
    prefetch(keys + slots[j] * slot_stride, row_bytes);
    prefetch(values + slots[j] * slot_stride, row_bytes);
  }
  for (int64_t block = 0; block < count; block += kLanes) {
    const int64_t block_end = std::min(count, block + kLanes);
    for (int64_t j = block; j < block_end; ++j) {
      if (j + kPrefetchDistance < count) {  // V rows too: the V pass then finds them in cache
        prefetch(keys + slots[j + kPrefetchDistance] * slot_stride, row_bytes);
        prefetch(values + slots[j + kPrefetchDistance] * slot_stride, row_bytes);
      }
      load_row<kChunks>(keys + slots[j] * slot_stride, head_dim, row);
      for (int64_t g = 0; g < group; ++g) {
        Lanes dot{};
        for (int64_t c = 0; c < num_chunks; ++c) dot += q[g * num_chunks + c] * row[c];
        dots[g * kLanes + j - block] = dot;
      }
    }
    for (int64_t g = 0; g < group; ++g) {  // lanes of positions past count: stale dots, never read
      const Lanes scores = pass.scale * reduce_16(dots + g * kLanes);
      std::memcpy(weights + g * stride + block, &scores, sizeof(scores));
    }
  }
  float* denominators = scratch.denominators.data();
  for (int64_t g = 0; g < group; ++g) denominators[g] = softmax_numerators(weights + g * stride, count);
  // The heads of a set share each V row's load; a set's sums (kSumLanes groups of lanes) stay in registers.
  const int64_t heads_per_set = std::max<int64_t>(1, kSumLanes / num_chunks);
  Lanes known_sums[kChunks > 0 ? std::max<int64_t>(kSumLanes, kChunks) : 1];
  Lanes* sums = kChunks > 0 ? known_sums : scratch.sums.data();
  for (int64_t g0 = 0; g0 < group; g0 += heads_per_set) {
    const int64_t set_size = std::min(heads_per_set, group - g0);
    std::fill(sums, sums + set_size * num_chunks, Lanes{});
    for (int64_t j = 0; j < count; ++j) {
      load_row<kChunks>(values + slots[j] * slot_stride, head_dim, row);
      for (int64_t h = 0; h < set_size; ++h) {
        const float w = weights[(g0 + h) * stride + j];
        for (int64_t c = 0; c < num_chunks; ++c) sums[h * num_chunks + c] += w * row[c];
      }
    }
    for (int64_t h = 0; h < set_size; ++h) {
      scalar_t* dst = pass.out + (token * pass.num_heads + kv_head * group + g0 + h) * head_dim;
      for (int64_t c = 0; c < num_chunks; ++c) {
        const Lanes normalized = sums[h * num_chunks + c] / denominators[g0 + h];
        for (int64_t l = 0; l < kLanes && c * kLanes + l < head_dim; ++l)
          dst[c * kLanes + l] = static_cast<scalar_t>(normalized[l]);
      }
    }
  }
}

template <typename scalar_t>
using AttendFn = void (*)(const Pass<scalar_t>&, int64_t, Scratch&);

// Common head sizes get their lane-group count at compile time; any other runs the same code with it
// at run time.
template <typename scalar_t>
AttendFn<scalar_t> attend_for(int64_t head_dim) {
  switch (head_dim) {
    case 32: return attend<2, scalar_t>;
    case 64: return attend<4, scalar_t>;
    case 80: return attend<5, scalar_t>;
    case 96: return attend<6, scalar_t>;
    case 128: return attend<8, scalar_t>;
    case 256: return attend<16, scalar_t>;
    default: return attend<0, scalar_t>;
  }
}

// Runs of items [bounds[i], bounds[i + 1]) with about equal positions each, one run per thread: items
// differ in length by their sequences' contexts, so equal item counts would leave threads idle.
std::vector<int64_t> split_items(const std::vector<int64_t>& item_positions, int64_t num_runs) {
  const int64_t num_items = static_cast<int64_t>(item_positions.size());
  int64_t total = 0;
  for (const int64_t n : item_positions) total += n;
  std::vector<int64_t> bounds(num_runs + 1, num_items);
  bounds[0] = 0;
  int64_t next_run = 1, done = 0;
  for (int64_t item = 0; item < num_items; ++item) {
    done += item_positions[item];
    while (next_run < num_runs && done * num_runs >= total * next_run) bounds[next_run++] = item + 1;
  }
  return bounds;
}

void check_rows(const torch::Tensor& rows, const char* name, int64_t num_tokens, int64_t num_heads,
                int64_t head_dim) {
  TORCH_CHECK(rows.dim() == 3 && rows.size(0) == num_tokens && rows.size(1) == num_heads && rows.size(2) == head_dim,
              name, " must be [", num_tokens, ", ", num_heads, ", ", head_dim, "], not ", rows.sizes());
}

// Each token's heads packed [heads, D] (tokens may be strided: slices of the fused q/k/v rows).
torch::Tensor packed_heads(const torch::Tensor& rows) {
  return rows.stride(2) == 1 && rows.stride(1) == rows.size(2) ? rows : rows.contiguous();
}

// queries [T, H, D] over the cache [num_slots, 2, KVH, D] after storing keys/values [T, KVH, D] at
// slot_mapping [T]: [T, H * D] in the queries' dtype.
torch::Tensor paged_attention(const torch::Tensor& queries, const torch::Tensor& keys, const torch::Tensor& values,
                              const torch::Tensor& kv_cache, const torch::Tensor& slot_mapping,
                              const torch::Tensor& slot_table, const torch::Tensor& sequences,
                              const torch::Tensor& positions, double scale, std::optional<int64_t> window) {
  for (const torch::Tensor* t : {&queries, &keys, &values, &kv_cache})
    TORCH_CHECK(t->device().is_cpu(), "paged_attention runs on CPU tensors only");
  TORCH_CHECK(queries.dim() == 3, "queries must be [T, H, D], not ", queries.sizes());
  TORCH_CHECK(kv_cache.dim() == 4 && kv_cache.size(1) == 2, "kv_cache must be [num_slots, 2, KVH, D], not ",
              kv_cache.sizes());
  TORCH_CHECK(kv_cache.is_contiguous(), "kv_cache must be contiguous");
  for (const torch::Tensor* t : {&queries, &keys, &values})
    TORCH_CHECK(t->scalar_type() == kv_cache.scalar_type(), "queries, keys and values (", t->scalar_type(),
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
  check_rows(keys, "keys", num_tokens, num_kv_heads, head_dim);
  check_rows(values, "values", num_tokens, num_kv_heads, head_dim);
  for (const torch::Tensor* t : {&slot_mapping, &slot_table, &sequences, &positions})
    TORCH_CHECK(t->scalar_type() == torch::kInt64 && t->is_contiguous() && t->device().is_cpu(),
                "slot_mapping, slot_table, sequences and positions must be contiguous int64 CPU tensors");
  TORCH_CHECK(!window || *window >= 1, "window must be at least 1 position, not ", window.value_or(0));
  TORCH_CHECK(slot_table.dim() == 2, "slot_table must be [B, L], not ", slot_table.sizes());
  TORCH_CHECK(slot_mapping.dim() == 1 && slot_mapping.size(0) == num_tokens && sequences.dim() == 1 &&
                  sequences.size(0) == num_tokens && positions.dim() == 1 && positions.size(0) == num_tokens,
              "slot_mapping, sequences and positions must be [T] with T = ", num_tokens);
  const int64_t num_seqs = slot_table.size(0), max_context_len = slot_table.size(1);
  const int64_t* new_slots = slot_mapping.data_ptr<int64_t>();
  const int64_t* table = slot_table.data_ptr<int64_t>();
  const int64_t* seq = sequences.data_ptr<int64_t>();
  const int64_t* pos = positions.data_ptr<int64_t>();
  std::vector<int64_t> item_positions(num_tokens * num_kv_heads);
  int64_t max_count = 0;
  for (int64_t t = 0; t < num_tokens; ++t) {
    TORCH_CHECK(new_slots[t] >= 0 && new_slots[t] < num_slots, "token ", t, " is stored at slot ", new_slots[t],
                " outside the cache's ", num_slots);
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
    std::fill_n(item_positions.begin() + t * num_kv_heads, num_kv_heads, pos[t] - first + 1);
  }

  const torch::Tensor q = packed_heads(queries), k = packed_heads(keys), v = packed_heads(values);
  torch::Tensor out = torch::empty({num_tokens, num_heads * head_dim}, queries.options());
  const int64_t group = num_heads / num_kv_heads, num_chunks = (head_dim + kLanes - 1) / kLanes;
  int64_t total_positions = 0;
  for (const int64_t n : item_positions) total_positions += n;
  const int64_t work = 2 * group * head_dim * total_positions;  // multiply-adds: q.k and the V sum
  const int64_t num_runs = std::clamp<int64_t>(work / kWorkPerThread, 1, at::get_num_threads());
  const std::vector<int64_t> bounds = split_items(item_positions, num_runs);
  const auto run = [&](auto* typed) {
    using scalar_t = std::remove_pointer_t<decltype(typed)>;
    scalar_t* cache = kv_cache.data_ptr<scalar_t>();
    const int64_t slot_stride = 2 * num_kv_heads * head_dim, row_size = num_kv_heads * head_dim;
    for (int64_t t = 0; t < num_tokens; ++t) {  // before any item reads them: a verify pass sees its own
      std::copy_n(k.data_ptr<scalar_t>() + t * k.stride(0), row_size, cache + new_slots[t] * slot_stride);
      std::copy_n(v.data_ptr<scalar_t>() + t * v.stride(0), row_size, cache + new_slots[t] * slot_stride + row_size);
    }
    const Pass<scalar_t> pass{q.data_ptr<scalar_t>(), q.stride(0), cache, table, seq, pos, out.data_ptr<scalar_t>(),
                              num_heads, num_kv_heads, head_dim, max_context_len, window, static_cast<float>(scale)};
    const AttendFn<scalar_t> attend_item = attend_for<scalar_t>(head_dim);
    at::parallel_for(0, num_runs, 1, [&](int64_t begin, int64_t end) {
      Scratch scratch{std::vector<Lanes>(group * num_chunks), std::vector<Lanes>(num_chunks),
                      std::vector<Lanes>(group * kLanes), std::vector<float>(group * (max_count + kLanes)),
                      std::vector<Lanes>(std::max(kSumLanes, num_chunks)), std::vector<float>(group)};
      for (int64_t item = bounds[begin]; item < bounds[end]; ++item) attend_item(pass, item, scratch);
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
  module.def("paged_attention", &paged_attention, pybind11::arg("queries"), pybind11::arg("keys"),
             pybind11::arg("values"), pybind11::arg("kv_cache"), pybind11::arg("slot_mapping"),
             pybind11::arg("slot_table"), pybind11::arg("sequences"), pybind11::arg("positions"),
             pybind11::arg("scale"), pybind11::arg("window"),
             "Store the new tokens' K/V [T, KVH, D] at their slots, then their queries' attention [T, H, D] over "
             "their sequences' cached K/V: [T, H * D].");
}
