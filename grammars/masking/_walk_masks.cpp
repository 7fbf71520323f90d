// Token masks as bits (`grammars.masking.token_bits`): a new state's mask is assembled as bits (token
// t is bit t % 64 of word t / 64: an eighth of a bool mask's memory to copy and set, which on a
// 262k-token vocabulary was most of a new mask's assembly) and kept as one bool array per distinct
// mask (`grammars.masking.masks.MaskTable._shared`). Here: a mask's identity (its words as bytes,
// and a 64-bit hash of them that multiplies word pairs independently; the hash only picks a bucket),
// the bool array of a new distinct mask, and the ids a bool mask allows among a few.
#include "_walk.h"

#include <array>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "token bits are read as numpy's little-endian words");

namespace stencil_walk {

namespace {

inline uint64_t mix(uint64_t h) {  // splitmix64's finalizer
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    return h ^ (h >> 31);
}

// Byte j of kSpread[b] is bit j of b: eight bools at a store.
constexpr auto kSpread = [] {
    std::array<uint64_t, 256> spread{};
    for (int byte = 0; byte < 256; ++byte)
        for (int bit = 0; bit < 8; ++bit)
            if (byte & (1 << bit)) spread[byte] |= 1ull << (8 * bit);
    return spread;
}();

// Spreads the bits of `in` over the bytes `out[from:size)` (from a multiple of 8); returns where it stopped.
Py_ssize_t spread_scalar(const uint8_t* in, Py_ssize_t from, Py_ssize_t size, uint8_t* out) {
    for (; from + 8 <= size; from += 8) std::memcpy(out + from, &kSpread[in[from / 8]], 8);
    return from;
}

#if defined(__x86_64__)
// 32 bools from 4 bytes of bits: each byte copied to its 8 lanes, each lane's bit tested.
__attribute__((target("avx2"))) Py_ssize_t spread_avx2(const uint8_t* in, Py_ssize_t size, uint8_t* out) {
    const __m256i lanes = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3,
                                           3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ull));
    const __m256i one = _mm256_set1_epi8(1);
    Py_ssize_t at = 0;
    for (; at + 32 <= size; at += 32) {
        int32_t word;
        std::memcpy(&word, in + at / 8, 4);
        const __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32(word), lanes);
        const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + at), _mm256_and_si256(set, one));
    }
    return at;
}

// 64 bools from 8 bytes of bits, one instruction.
__attribute__((target("avx512bw"))) Py_ssize_t spread_avx512(const uint8_t* in, Py_ssize_t size, uint8_t* out) {
    const __m512i one = _mm512_set1_epi8(1);
    Py_ssize_t at = 0;
    for (; at + 64 <= size; at += 64) {
        uint64_t word;
        std::memcpy(&word, in + at / 8, 8);
        _mm512_storeu_si512(out + at, _mm512_maskz_mov_epi8(word, one));
    }
    return at;
}

// Asked at load: the CPU model must be initialized first in a static initializer.
const int kWidest = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bw") ? 512 : __builtin_cpu_supports("avx2") ? 256 : 0;
}();
#else
constexpr int kWidest = 0;
#endif

// The bools of the first `size` bits of `in`, in `out`: 512 or 256 bits a step where `width` says so
// (AVX-512, AVX2), then 8 at a time through the table.
void spread(const uint8_t* in, Py_ssize_t size, uint8_t* out, int width) {
    Py_ssize_t done = 0;
#if defined(__x86_64__)
    if (width == 512) done = spread_avx512(in, size, out);
    if (width == 256) done = spread_avx2(in, size, out);
#endif
    done = spread_scalar(in, done, size, out);
    for (; done < size; ++done) out[done] = (in[done / 8] >> (done % 8)) & 1;
}

// A 64-bit hash of `length` bytes: sums of the full 128-bit products of key-offset word pairs, each
// folded to 64 bits (NH as UMAC's, but a 64-bit product alone would lose a word's top bits against a
// partner with trailing zeros), so the multiplications are independent and overlap; then mixed with
// the length and the tail.
uint64_t hash_bytes(const uint8_t* data, Py_ssize_t length) {
    static constexpr uint64_t kKeys[8] = {0x9e3779b97f4a7c15ull, 0xc2b2ae3d27d4eb4full, 0x165667b19e3779f9ull,
                                          0xd6e8feb86659fd93ull, 0xa0761d6478bd642full, 0xe7037ed1a0b428dbull,
                                          0x8ebc6af09c88c6e3ull, 0x589965cc75374cc3ull};
    uint64_t sums[4] = {0, 0, 0, 0};
    Py_ssize_t i = 0;
    for (; i + 64 <= length; i += 64)
        for (int lane = 0; lane < 4; ++lane) {
            uint64_t a, b;
            std::memcpy(&a, data + i + 16 * lane, 8);
            std::memcpy(&b, data + i + 16 * lane + 8, 8);
            const unsigned __int128 product =
                static_cast<unsigned __int128>(a + kKeys[2 * lane]) * (b + kKeys[2 * lane + 1]);
            sums[lane] += static_cast<uint64_t>(product) ^ static_cast<uint64_t>(product >> 64);
        }
    uint64_t h = mix(static_cast<uint64_t>(length));
    for (uint64_t sum : sums) h = mix(h ^ sum);
    for (; i < length; i += 8) {
        uint64_t word = 0;
        std::memcpy(&word, data + i, static_cast<size_t>(std::min<Py_ssize_t>(8, length - i)));
        h = mix(h ^ word);
    }
    return h;
}

}  // namespace

// (hash, packed): the identity of a mask whose words are the bytes `packed` (a reference the result
// takes over, or releases on failure).
PyObject* identity_of(PyObject* packed) {
    const auto* data = reinterpret_cast<const uint8_t*>(PyBytes_AS_STRING(packed));
    return Py_BuildValue("(KN)", static_cast<unsigned long long>(hash_bytes(data, PyBytes_GET_SIZE(packed))), packed);
}

// bits_identity(bits) -> (hash, packed): a uint64 token set's words as bytes, and a 64-bit hash of them.
PyObject* bits_identity(PyObject*, PyObject* bits_object) {
    View bits;
    if (!bits.get(bits_object, "bits_identity: bits", 8)) return nullptr;
    PyObject* packed = PyBytes_FromStringAndSize(bits.data<char>(), bits.buffer.len);
    return packed == nullptr ? nullptr : identity_of(packed);
}

// bool_mask(bits, size, width=-1) -> bytearray[size]: 1 at each token of a token set (uint64 words, or
// their bytes), 0 elsewhere; the set must hold at least `size` bits. `width`: the bits spread a step
// (512 or 256, or 0 for the table alone), at most the widest this CPU takes; -1, that widest (the
// tests run each).
PyObject* bool_mask(PyObject*, PyObject* args) {
    PyObject* bits_object;
    Py_ssize_t size;
    int width = -1;
    if (!PyArg_ParseTuple(args, "On|i", &bits_object, &size, &width)) return nullptr;
    if (width == -1) width = kWidest;
    if ((width != 0 && width != 256 && width != 512) || width > kWidest) {
        PyErr_Format(PyExc_ValueError, "bool_mask: this CPU spreads 0, 256 or 512 bits a step, at most %d", kWidest);
        return nullptr;
    }
    View bits;
    if (PyObject_GetBuffer(bits_object, &bits.buffer, PyBUF_C_CONTIGUOUS) != 0) return nullptr;
    bits.held = true;
    if (size < 0 || bits.buffer.len * 8 < size) {
        PyErr_SetString(PyExc_ValueError, "bool_mask: fewer bits than tokens");
        return nullptr;
    }
    PyObject* mask = PyByteArray_FromStringAndSize(nullptr, size);
    if (mask == nullptr) return nullptr;
    spread(static_cast<const uint8_t*>(bits.buffer.buf), size, reinterpret_cast<uint8_t*>(PyByteArray_AS_STRING(mask)),
           width);
    return mask;
}

// walked_suspects(mask, inside_bits, ids, inside_too) -> [id for id, too in zip(ids, inside_too) if
//   mask[id] and (too or id not in inside_bits)]: `mask` bool, `inside_bits` a uint64 token set (a walk's
//   inside tokens), `ids` int32 and `inside_too` bool, one per id. The few suspect tokens a distinct-keys
//   mask checks (`MaskTable.allowed_with_keys`); numpy's gathers and list took a tenth of a cold mask.
PyObject* walked_suspects(PyObject*, PyObject* args) {
    PyObject *mask_object, *inside_object, *ids_object, *too_object;
    if (!PyArg_ParseTuple(args, "OOOO", &mask_object, &inside_object, &ids_object, &too_object)) return nullptr;
    View mask, inside, ids, too;
    if (!mask.get(mask_object, "walked_suspects: mask", 1) || !inside.get(inside_object, "walked_suspects: bits", 8) ||
        !ids.get(ids_object, "walked_suspects: ids", 4) || !too.get(too_object, "walked_suspects: inside_too", 1))
        return nullptr;
    if (too.count() != ids.count()) {
        PyErr_SetString(PyExc_ValueError, "walked_suspects: one inside_too flag per id expected");
        return nullptr;
    }
    const uint8_t* allowed = mask.data<uint8_t>();
    const uint64_t* words = inside.data<uint64_t>();
    const int32_t* id = ids.data<int32_t>();
    const uint8_t* counts_inside = too.data<uint8_t>();
    PyObject* found = PyList_New(0);
    if (found == nullptr) return nullptr;
    for (Py_ssize_t i = 0; i < ids.count(); ++i) {
        const int32_t token = id[i];
        if (token < 0 || token >= mask.count() || token / 64 >= inside.count()) {
            Py_DECREF(found);
            PyErr_SetString(PyExc_IndexError, "walked_suspects: an id past the mask or the bits");
            return nullptr;
        }
        if (!allowed[token] || (!counts_inside[i] && (words[token / 64] >> (token % 64) & 1))) continue;
        PyObject* value = PyLong_FromLong(token);
        if (value == nullptr || PyList_Append(found, value) != 0) {
            Py_XDECREF(value);
            Py_DECREF(found);
            return nullptr;
        }
        Py_DECREF(value);
    }
    return found;
}

}  // namespace stencil_walk
