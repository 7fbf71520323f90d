// Reading token masks. A mask's identity (`grammars.masking.masks.MaskTable._shared`, which keeps one array
// per distinct mask): its bits packed, and a 64-bit hash of them, in one call. Packing with numpy and
// hashing the packed bytes in Python cost ~16 us a mask on a 262k-token vocabulary, more than most
// of the mask's assembly; here the packing takes 64 bytes an instruction where the CPU has AVX-512
// (16 with SSE2, every x86-64 CPU), and the hash multiplies word pairs independently. The hash only
// picks a bucket: masks are shared only when their packed bits are equal.
#include "_walk.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace stencil_walk {

namespace {

constexpr uint64_t kHighBits = 0x8080808080808080ull;

// Eight bytes of a bool mask (any nonzero byte is true) as eight bits, the first byte lowest: each
// byte's truth moved to its lowest bit, then gathered by one multiplication (byte j's bit lands on
// bit 56 + j, and no two products overlap, so nothing carries).
inline uint8_t pack8(uint64_t bytes) {
    const uint64_t nonzero = ((((bytes & ~kHighBits) + ~kHighBits) | bytes) & kHighBits) >> 7;
    return static_cast<uint8_t>((nonzero * 0x0102040810204080ull) >> 56);
}

// Packs the whole 8-byte groups of `in` (size bytes) from byte `from` on; returns where it stopped.
Py_ssize_t pack_scalar(const uint8_t* in, Py_ssize_t from, Py_ssize_t size, uint8_t* out) {
    for (; from + 8 <= size; from += 8) {
        uint64_t bytes;
        std::memcpy(&bytes, in + from, 8);
        out[from / 8] = pack8(bytes);
    }
    return from;
}

#if defined(__x86_64__)
Py_ssize_t pack_sse2(const uint8_t* in, Py_ssize_t size, uint8_t* out) {
    const __m128i zero = _mm_setzero_si128();
    Py_ssize_t i = 0;
    for (; i + 16 <= size; i += 16) {
        const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i));
        const uint16_t bits = static_cast<uint16_t>(~_mm_movemask_epi8(_mm_cmpeq_epi8(bytes, zero)));
        std::memcpy(out + i / 8, &bits, 2);
    }
    return i;
}

__attribute__((target("avx512bw"))) Py_ssize_t pack_avx512(const uint8_t* in, Py_ssize_t size, uint8_t* out) {
    Py_ssize_t i = 0;
    for (; i + 64 <= size; i += 64) {
        const __m512i bytes = _mm512_loadu_si512(in + i);
        const uint64_t bits = _mm512_test_epi8_mask(bytes, bytes);
        std::memcpy(out + i / 8, &bits, 8);
    }
    return i;
}

// Asked at load: the CPU model must be initialized first in a static initializer.
const bool kHasAvx512 = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bw") != 0;
}();
#endif

// Packs `size` bytes of `in` into (size + 7) / 8 bytes of `out`.
void pack(const uint8_t* in, Py_ssize_t size, uint8_t* out) {
    Py_ssize_t done = 0;
#if defined(__x86_64__)
    done = kHasAvx512 ? pack_avx512(in, size, out) : 0;
    done += pack_sse2(in + done, size - done, out + done / 8);
#endif
    done = pack_scalar(in, done, size, out);
    if (done < size) {
        uint64_t bytes = 0;
        std::memcpy(&bytes, in + done, static_cast<size_t>(size - done));
        out[done / 8] = pack8(bytes);
    }
}

inline uint64_t mix(uint64_t h) {  // splitmix64's finalizer
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    return h ^ (h >> 31);
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

// packed_mask(mask) -> (hash, packed): a C-contiguous bool mask's bits, 8 to a byte with the first element
// lowest (numpy's packbits with bitorder="little"), and a 64-bit hash of those bytes.
PyObject* packed_mask(PyObject*, PyObject* mask_object) {
    View mask;
    if (!mask.get(mask_object, "packed_mask: mask", 1)) return nullptr;
    const Py_ssize_t size = mask.count(), length = (size + 7) / 8;
    PyObject* packed = PyBytes_FromStringAndSize(nullptr, length);
    if (packed == nullptr) return nullptr;
    auto* out = reinterpret_cast<uint8_t*>(PyBytes_AS_STRING(packed));
    pack(mask.data<uint8_t>(), size, out);
    return Py_BuildValue("(KN)", static_cast<unsigned long long>(hash_bytes(out, length)), packed);
}

// allowed_among(mask, ids) -> [id for id in ids if mask[id]]: `ids` int32 (C-contiguous), each an index
// of the bool `mask`. A distinct-keys mask checks the few candidate tokens its plain mask allows
// (`MaskTable.allowed_with_keys`); numpy's gather and list took a tenth of a cold mask for them.
PyObject* allowed_among(PyObject*, PyObject* args) {
    PyObject *mask_object, *ids_object;
    if (!PyArg_ParseTuple(args, "OO", &mask_object, &ids_object)) return nullptr;
    View mask, ids;
    if (!mask.get(mask_object, "allowed_among: mask", 1) || !ids.get(ids_object, "allowed_among: ids", 4)) return nullptr;
    const uint8_t* allowed = mask.data<uint8_t>();
    const int32_t* id = ids.data<int32_t>();
    PyObject* found = PyList_New(0);
    if (found == nullptr) return nullptr;
    for (Py_ssize_t i = 0; i < ids.count(); ++i) {
        if (id[i] < 0 || id[i] >= mask.count()) {
            Py_DECREF(found);
            PyErr_SetString(PyExc_IndexError, "allowed_among: an id past the mask");
            return nullptr;
        }
        if (!allowed[id[i]]) continue;
        PyObject* value = PyLong_FromLong(id[i]);
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
