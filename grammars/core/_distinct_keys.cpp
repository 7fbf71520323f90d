// The batch classifier of `grammars.core.distinct_keys.refusals`: one pass over each candidate token
// of a keyed mask, by `scan`'s rules, that settles in C++ what most tokens need (nothing, or a refusal
// because a key they close repeats one of its object) and leaves the rest to the Python reference.
//
// Per token, one verdict byte:
//   kPass    `refusals` takes the token: no key it closes repeats one, and (where keys may run out) no
//            key it begins may still spell a seen key and it does not end where a fresh key must come;
//   kRefuse  a key it closes repeats one of its object (`scan` returns None);
//   kAwait   keys may run out and it ends where a fresh key must come, with the open objects and their
//            keys as they were (`after` is `keys` with mode _KEY_NEXT): Python walks it and asks `_at_key`;
//   kAsk     anything else (a key that may still spell a seen key, a changed object where a fresh key must
//            come, an escape or a control byte in a closed key, text that is not UTF-8): Python scans it.
// The Python `refusals` with every verdict kAsk is the reference (tests/grammars/test_keyed_masks.py).
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace {

// `distinct_keys`' scanner modes.
constexpr int kValue = 0, kKeyNext = 1, kKey = 2, kString = 3;
constexpr uint8_t kPass = 0, kRefuse = 1, kAwait = 2, kAsk = 3;

// An open container while a token is scanned: an object's keys are `seen` (a frozenset from before the
// token; null for an object the token opened) and `added` (UTF-8 of the keys the token closed in it).
struct Frame {
    bool is_object = false;
    PyObject* seen = nullptr;  // borrowed
    std::vector<std::string> added;

    bool has_keys() const { return (seen != nullptr && PySet_GET_SIZE(seen) > 0) || !added.empty(); }
};

// A key begun in an object with keys: where its opening quote is, its object, and how many keys the
// token had added to that object by then.
struct Start {
    Py_ssize_t quote;
    size_t frame;
    size_t added;
};

// Whether `name` (UTF-8, no escapes or controls) is a key of `frame`: 1, 0, or -1 (kAsk: not UTF-8).
int holds(const Frame& frame, const char* name, Py_ssize_t length) {
    for (const std::string& key : frame.added)
        if (static_cast<Py_ssize_t>(key.size()) == length && std::memcmp(key.data(), name, length) == 0) return 1;
    if (frame.seen == nullptr || PySet_GET_SIZE(frame.seen) == 0) return 0;
    PyObject* decoded = PyUnicode_DecodeUTF8(name, length, "surrogatepass");
    if (decoded == nullptr) {
        PyErr_Clear();
        return -1;
    }
    const int found = PySet_Contains(frame.seen, decoded);
    Py_DECREF(decoded);
    if (found < 0) {
        PyErr_Clear();
        return -1;
    }
    return found;
}

// Whether a key whose bytes so far are `prefix` may still spell a key of `frame` among `seen` and its
// first `added` keys (`distinct_keys._may_spell_seen`): 1, 0, or -1 (kAsk: a seen key is no UTF-8).
int may_spell(const Frame& frame, size_t added, const char* prefix, Py_ssize_t length) {
    const auto starts = [&](const char* key, Py_ssize_t key_length) {
        return key_length >= length && std::memcmp(key, prefix, length) == 0;
    };
    for (size_t i = 0; i < added; ++i)
        if (starts(frame.added[i].data(), static_cast<Py_ssize_t>(frame.added[i].size()))) return 1;
    if (frame.seen == nullptr) return 0;
    PyObject* keys = PyObject_GetIter(frame.seen);
    if (keys == nullptr) {
        PyErr_Clear();
        return -1;
    }
    int found = 0;
    while (PyObject* key = PyIter_Next(keys)) {
        Py_ssize_t key_length;
        const char* utf8 = PyUnicode_Check(key) ? PyUnicode_AsUTF8AndSize(key, &key_length) : nullptr;
        if (utf8 == nullptr) {  // a lone surrogate (surrogatepass in Python) or not a str
            PyErr_Clear();
            found = -1;
        } else if (starts(utf8, key_length)) {
            found = 1;
        }
        Py_DECREF(key);
        if (found != 0) break;
    }
    Py_DECREF(keys);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        return -1;
    }
    return found;
}

bool is_control_or_escape(const char* data, Py_ssize_t length) {
    for (Py_ssize_t i = 0; i < length; ++i)
        if (static_cast<unsigned char>(data[i]) < 0x20 || data[i] == '\\') return true;
    return false;
}

// The verdict on `data` after the text that left the scanner in (`base`, `mode`, `key`, `is_escaped`).
uint8_t classify_token(const std::vector<Frame>& base, int mode, const std::string& key, bool is_escaped,
                       const char* data, Py_ssize_t length, bool keys_may_run_out, std::vector<Frame>& frames,
                       std::vector<Start>& starts, std::string& name) {
    frames = base;
    starts.clear();
    size_t lowest = base.size();  // the fewest containers open at any point: below it a base frame closed
    Py_ssize_t key_from = 0;
    bool key_carried = mode == kKey;  // the key's first bytes come before the token
    for (Py_ssize_t position = 0; position < length; ++position) {
        const char byte = data[position];
        if (mode == kKey || mode == kString) {
            if (is_escaped) {
                is_escaped = false;
            } else if (byte == '\\') {
                is_escaped = true;
            } else if (byte == '"') {
                if (mode == kKey) {
                    name.assign(key_carried ? key : std::string());
                    name.append(data + key_from, position - key_from);
                    if (frames.empty() || is_control_or_escape(name.data(), static_cast<Py_ssize_t>(name.size())))
                        return kAsk;
                    const int found = holds(frames.back(), name.data(), static_cast<Py_ssize_t>(name.size()));
                    if (found < 0) return kAsk;
                    if (found == 1) return kRefuse;
                    frames.back().added.push_back(name);
                    frames.back().is_object = true;  // as `scan` makes the frame a set of keys
                    key_carried = false;
                }
                mode = kValue;
            }
        } else if (byte == '"') {
            if (mode == kKeyNext) {
                if (!frames.empty() && frames.back().has_keys())
                    starts.push_back({position, frames.size() - 1, frames.back().added.size()});
                mode = kKey;
                key_from = position + 1;
                key_carried = false;
            } else {
                mode = kString;
            }
        } else if (byte == '{' || byte == '[') {
            frames.emplace_back();
            frames.back().is_object = byte == '{';
            mode = byte == '{' ? kKeyNext : kValue;
        } else if (byte == '}' || byte == ']') {
            if (!frames.empty()) frames.pop_back();
            lowest = std::min(lowest, frames.size());
            mode = kValue;
        } else if (byte == ',' && !frames.empty() && frames.back().is_object) {
            mode = kKeyNext;
        }
    }
    if (!keys_may_run_out) return kPass;
    for (const Start& start : starts) {
        const char* rest = data + start.quote + 1;
        const Py_ssize_t rest_length = length - start.quote - 1;
        if (std::memchr(rest, '\\', rest_length) != nullptr) return kAsk;
        if (std::memchr(rest, '"', rest_length) != nullptr) continue;  // a key it closes: checked above
        // A frame the token popped since is gone from `frames`: only a key closed after it could pop it,
        // and such a token has a quote after this start.
        const int spells = may_spell(frames[start.frame], start.added, rest, rest_length);
        if (spells != 0) return kAsk;
    }
    const bool awaits_fresh_key = mode == kKeyNext && !frames.empty() && frames.back().has_keys();
    if (!awaits_fresh_key) return kPass;
    // The objects as they were: no container of the text before the token closed, none the token opened
    // is still open, and no key was added to those before it.
    bool unchanged = lowest == base.size() && frames.size() == base.size();
    for (size_t i = 0; unchanged && i < frames.size(); ++i) unchanged = frames[i].added.empty();
    return unchanged && !is_escaped && key.empty() ? kAwait : kAsk;
}

// classify(frames, mode, key, is_escaped, tokens, keys_may_run_out) -> bytes: one verdict per token (see
//   the top of this file) after text whose scan (`Keys`, without a gate) stands at `frames` (a tuple of
//   frozensets of str, or None for an array), `mode`, `key` (bytes) and `is_escaped`; `tokens` a list of bytes.
PyObject* classify(PyObject*, PyObject* args) {
    PyObject *frames_object, *tokens;
    int mode, is_escaped, keys_may_run_out;
    const char* key_data;
    Py_ssize_t key_length;
    if (!PyArg_ParseTuple(args, "O!iy#pO!p", &PyTuple_Type, &frames_object, &mode, &key_data, &key_length,
                          &is_escaped, &PyList_Type, &tokens, &keys_may_run_out))
        return nullptr;
    if (mode < kValue || mode > kString) {
        PyErr_Format(PyExc_ValueError, "classify: no scanner mode %d", mode);
        return nullptr;
    }
    std::vector<Frame> base(static_cast<size_t>(PyTuple_GET_SIZE(frames_object)));
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(frames_object); ++i) {
        PyObject* frame = PyTuple_GET_ITEM(frames_object, i);
        if (frame == Py_None) continue;
        if (!PyFrozenSet_Check(frame)) {
            PyErr_SetString(PyExc_TypeError, "classify: frames must hold frozensets or None");
            return nullptr;
        }
        base[i].is_object = true;
        base[i].seen = frame;
    }
    const std::string key(key_data, static_cast<size_t>(key_length));
    const Py_ssize_t count = PyList_GET_SIZE(tokens);
    PyObject* verdicts = PyBytes_FromStringAndSize(nullptr, count);
    if (verdicts == nullptr) return nullptr;
    auto* out = reinterpret_cast<uint8_t*>(PyBytes_AS_STRING(verdicts));
    std::vector<Frame> frames;
    std::vector<Start> starts;
    std::string name;
    for (Py_ssize_t i = 0; i < count; ++i) {
        PyObject* token = PyList_GET_ITEM(tokens, i);
        if (!PyBytes_Check(token)) {
            Py_DECREF(verdicts);
            PyErr_SetString(PyExc_TypeError, "classify: tokens must be bytes");
            return nullptr;
        }
        out[i] = classify_token(base, mode, key, is_escaped != 0, PyBytes_AS_STRING(token), PyBytes_GET_SIZE(token),
                                keys_may_run_out != 0, frames, starts, name);
    }
    return verdicts;
}

PyMethodDef kMethods[] = {
    {"classify", classify, METH_VARARGS, "One verdict byte per token for distinct_keys.refusals (see _distinct_keys.cpp)."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "_distinct_keys",
                       "The compiled token classifier of grammars.core.distinct_keys.refusals.", -1, kMethods};

}  // namespace

PyMODINIT_FUNC PyInit__distinct_keys() { return PyModule_Create(&kModule); }
