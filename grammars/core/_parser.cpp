// Compiled configurations of the parser's recursive transition network (`grammars.core.parser`).
//
// `Parser` builds the network in Python and hands it here as flat arrays (per node: lexeme edges,
// calls, epsilon edges, whether it ends its rule, its counter). `Configurations` then runs what
// `Parser` runs in Python, by the same rules: `advance`, `join`, the expansion of a stack to the
// stacks whose top consumes a lexeme, hash-consed configurations numbered in creation order (so the
// same calls give the same ids as the Python parser), the allowed lexemes of each, and the same
// budgets, raising the error class and messages Python passes in. The Python parser stays the
// reference (tests/grammars/test_compiled_parser.py compares the two).
//
// A stack is hash-consed as a persistent list: (the stack below it, its top frame). Pushing, popping
// and replacing the top are then O(1) with no copying, and a configuration is a sorted array of stack
// ids. Nothing here is a Python object, so the garbage collector never walks it.
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace {

constexpr int32_t kEmptyStack = 0;
constexpr int32_t kNone = -1;  // advance's "no stack can consume it"

struct PythonError {};  // a Python exception is set; unwind to the method's entry

inline uint64_t mix(uint64_t h, uint64_t v) {
    h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    return h * 0xff51afd7ed558ccdULL;
}

struct Frame {
    int32_t below;  // the stack under this frame
    int32_t node;
    int64_t count;
    int32_t depth;  // frames in the stack, this one included
};

struct FrameKey {
    int32_t below, node;
    int64_t count;
    bool operator==(const FrameKey& o) const { return below == o.below && node == o.node && count == o.count; }
};

struct FrameKeyHash {
    size_t operator()(const FrameKey& k) const {
        return mix(mix(static_cast<uint64_t>(k.below), static_cast<uint64_t>(k.node)), static_cast<uint64_t>(k.count));
    }
};

struct Expansion {
    std::vector<int32_t> stacks;  // sorted
    bool accepting;
};

// The network as flat arrays, in CSR form: the edges of node n are [offsets[n], offsets[n + 1]).
struct Network {
    std::vector<int64_t> lexeme_offsets, lexemes, lexeme_targets;
    std::vector<int64_t> call_offsets, callees, returns;
    std::vector<int64_t> eps_offsets, eps_targets;
    std::vector<int64_t> finals, counter_low, counter_high, counter_item;  // high -1: unbounded; item -1: none
    size_t size() const { return finals.size(); }
    bool consumes(int32_t n) const { return lexeme_offsets[n] != lexeme_offsets[n + 1]; }
};

struct Limits {
    int64_t max_frames, max_stacks_per_config, max_expansion_steps, max_stack_depth, max_cached_expansions;
};

class Configurations {
  public:
    Configurations(Network network, Limits limits, PyObject* error, std::string too_many_frames,
                   std::string too_many_stacks, std::string too_deep)
        : net_(std::move(network)),
          limits_(limits),
          error_(error),
          too_many_frames_(std::move(too_many_frames)),
          too_many_stacks_(std::move(too_many_stacks)),
          too_deep_(std::move(too_deep)),
          closures_(net_.size()),
          tails_(net_.size(), -1) {
        Py_INCREF(error_);
        frames_.push_back({kEmptyStack, -1, 0, 0});
        config_offsets_.push_back(0);
        allowed_offsets_.push_back(0);
    }
    ~Configurations() { Py_DECREF(error_); }

    int32_t start(int32_t node) { return config_of({push(kEmptyStack, node, 0)}); }

    int32_t advance(int32_t config, int32_t lexeme) {
        const uint64_t key = (static_cast<uint64_t>(config) << 32) | static_cast<uint32_t>(lexeme);
        auto found = advance_cache_.find(key);
        if (found != advance_cache_.end()) return found->second;
        std::vector<int32_t> stacks;
        for (int64_t i = config_offsets_[config]; i < config_offsets_[config + 1]; ++i) {
            const Frame top = frames_[config_stacks_[i]];
            for (int64_t e = net_.lexeme_offsets[top.node]; e < net_.lexeme_offsets[top.node + 1]; ++e)
                if (net_.lexemes[e] == lexeme)
                    stacks.push_back(push(top.below, static_cast<int32_t>(net_.lexeme_targets[e]), top.count));
        }
        int32_t result = stacks.empty() ? kNone : config_of(stacks);
        if (result != kNone && num_stacks(result) == 0 && !accepting_[result]) result = kNone;
        advance_cache_.emplace(key, result);
        return result;
    }

    int32_t join(const std::vector<int32_t>& configs) {
        if (configs.size() == 1) return configs[0];
        std::vector<int32_t> stacks;
        bool accepting = false;
        for (int32_t c : configs) {
            stacks.insert(stacks.end(), config_stacks_.begin() + config_offsets_[c],
                          config_stacks_.begin() + config_offsets_[c + 1]);
            accepting = accepting || accepting_[c];
        }
        sort_unique(stacks);
        return intern_config(stacks, accepting);
    }

    size_t num_nodes() const { return net_.size(); }
    size_t num_configs() const { return accepting_.size(); }
    int64_t num_frames() const { return num_frames_; }
    bool accepting(int32_t config) const { return accepting_[config]; }
    int64_t num_stacks(int32_t config) const { return config_offsets_[config + 1] - config_offsets_[config]; }
    const int32_t* stacks(int32_t config) const { return config_stacks_.data() + config_offsets_[config]; }
    const int32_t* allowed(int32_t config) const { return allowed_lexemes_.data() + allowed_offsets_[config]; }
    int64_t num_allowed(int32_t config) const { return allowed_offsets_[config + 1] - allowed_offsets_[config]; }
    const Frame& frame(int32_t stack) const { return frames_[stack]; }

    // Bytes held (hash tables estimated at a node and a bucket per entry): the memory this parser
    // adds to a compiled constraint, which tracemalloc does not see.
    size_t held_bytes() const {
        constexpr size_t kEntry = 2 * sizeof(void*) + sizeof(size_t);
        size_t total = frames_.capacity() * sizeof(Frame) + config_offsets_.capacity() * 8 +
                       config_stacks_.capacity() * 4 + accepting_.capacity() / 8 + allowed_offsets_.capacity() * 8 +
                       allowed_lexemes_.capacity() * 4 + tails_.capacity() + seen_.capacity() * 4;
        total += frame_ids_.size() * (kEntry + sizeof(FrameKey) + 4) + config_ids_.size() * (kEntry + 12) +
                 advance_cache_.size() * (kEntry + 12);
        for (const auto& entry : expand_cache_) total += kEntry + 8 + entry.second.stacks.capacity() * 4;
        for (const auto& order : closures_) total += sizeof(order) + order.capacity() * 4;
        for (const std::vector<int64_t>* v : {&net_.lexeme_offsets, &net_.lexemes, &net_.lexeme_targets,
                                              &net_.call_offsets, &net_.callees, &net_.returns, &net_.eps_offsets,
                                              &net_.eps_targets, &net_.finals, &net_.counter_low, &net_.counter_high,
                                              &net_.counter_item})
            total += v->capacity() * 8;
        return total;
    }

  private:
    int32_t push(int32_t below, int32_t node, int64_t count) {
        const FrameKey key{below, node, count};
        auto found = frame_ids_.find(key);
        if (found != frame_ids_.end()) return found->second;
        const int32_t id = static_cast<int32_t>(frames_.size());
        frames_.push_back({below, node, count, frames_[below].depth + 1});
        frame_ids_.emplace(key, id);
        return id;
    }

    [[noreturn]] void fail(const std::string& message) {
        PyErr_SetString(error_, message.c_str());
        throw PythonError();
    }

    static void sort_unique(std::vector<int32_t>& v) {
        std::sort(v.begin(), v.end());
        v.erase(std::unique(v.begin(), v.end()), v.end());
    }

    int32_t config_of(const std::vector<int32_t>& starts) {
        std::vector<int32_t> stacks;
        bool accepting = false;
        for (int32_t start : starts) {
            const Expansion& expanded = expand(start);
            stacks.insert(stacks.end(), expanded.stacks.begin(), expanded.stacks.end());
            accepting = accepting || expanded.accepting;
        }
        sort_unique(stacks);
        if (static_cast<int64_t>(stacks.size()) > limits_.max_stacks_per_config) fail(too_many_stacks_);
        return intern_config(stacks, accepting);
    }

    int32_t intern_config(const std::vector<int32_t>& stacks, bool accepting) {
        uint64_t h = accepting ? 1 : 2;
        for (int32_t s : stacks) h = mix(h, static_cast<uint64_t>(s));
        auto range = config_ids_.equal_range(h);
        for (auto it = range.first; it != range.second; ++it) {
            const int32_t c = it->second;
            if (accepting_[c] == accepting && num_stacks(c) == static_cast<int64_t>(stacks.size()) &&
                std::equal(stacks.begin(), stacks.end(), config_stacks_.begin() + config_offsets_[c]))
                return c;
        }
        for (int32_t s : stacks) num_frames_ += frames_[s].depth;
        if (num_frames_ > limits_.max_frames) fail(too_many_frames_);
        const int32_t config = static_cast<int32_t>(accepting_.size());
        config_stacks_.insert(config_stacks_.end(), stacks.begin(), stacks.end());
        config_offsets_.push_back(static_cast<int64_t>(config_stacks_.size()));
        accepting_.push_back(accepting);
        const size_t first = allowed_lexemes_.size();
        for (int32_t s : stacks) {
            const int32_t node = frames_[s].node;
            for (int64_t e = net_.lexeme_offsets[node]; e < net_.lexeme_offsets[node + 1]; ++e)
                allowed_lexemes_.push_back(static_cast<int32_t>(net_.lexemes[e]));
        }
        std::sort(allowed_lexemes_.begin() + first, allowed_lexemes_.end());
        allowed_lexemes_.erase(std::unique(allowed_lexemes_.begin() + first, allowed_lexemes_.end()),
                               allowed_lexemes_.end());
        allowed_offsets_.push_back(static_cast<int64_t>(allowed_lexemes_.size()));
        config_ids_.emplace(h, config);
        return config;
    }

    // The nodes reachable from `start` through epsilon edges, `start` first.
    const std::vector<int32_t>& closure(int32_t start) {
        std::vector<int32_t>& order = closures_[start];
        if (order.empty()) {
            std::unordered_set<int32_t> seen{start};
            order.push_back(start);
            for (size_t i = 0; i < order.size(); ++i) {
                const int32_t node = order[i];
                for (int64_t e = net_.eps_offsets[node]; e < net_.eps_offsets[node + 1]; ++e) {
                    const int32_t next = static_cast<int32_t>(net_.eps_targets[e]);
                    if (seen.insert(next).second) order.push_back(next);
                }
            }
        }
        return order;
    }

    // Whether returning to `node` only returns further (then a call need not push it).
    bool is_tail(int32_t node) {
        if (tails_[node] < 0) {
            bool tail = true;
            for (int32_t m : closure(node))
                tail = tail && net_.finals[m] && !net_.consumes(m) && net_.call_offsets[m] == net_.call_offsets[m + 1] &&
                       net_.counter_item[m] < 0;
            tails_[node] = tail;
        }
        return tails_[node] != 0;
    }

    // All stacks reachable from `start` without consuming input whose top consumes a lexeme, and
    // whether the input can end here (Parser._expand).
    const Expansion& expand(int32_t start) {
        auto found = expand_cache_.find(start);
        if (found != expand_cache_.end()) return found->second;
        Expansion value{{}, false};
        const uint32_t epoch = next_epoch();
        mark(start, epoch);
        std::vector<int32_t>& work = work_;
        std::vector<int32_t>& successors = successors_;
        work.assign(1, start);
        int64_t steps = 0;
        while (!work.empty()) {
            const int32_t stack = work.back();
            work.pop_back();
            const Frame top = frames_[stack];
            if (++steps > limits_.max_expansion_steps || top.depth > limits_.max_stack_depth) fail(too_deep_);
            const int32_t base = top.below;
            const int64_t count = top.count;
            successors.clear();
            for (int32_t m : closure(top.node)) {
                if (net_.consumes(m)) value.stacks.push_back(push(base, m, count));
                for (int64_t e = net_.call_offsets[m]; e < net_.call_offsets[m + 1]; ++e) {
                    const int32_t callee = static_cast<int32_t>(net_.callees[e]);
                    const int32_t ret = static_cast<int32_t>(net_.returns[e]);
                    successors.push_back(is_tail(ret) ? push(base, callee, 0) : push(push(base, ret, count), callee, 0));
                }
                bool finishes = net_.finals[m] != 0;
                if (net_.counter_item[m] >= 0) {
                    const int64_t low = net_.counter_low[m], high = net_.counter_high[m];
                    finishes = count >= low;
                    if (high < 0 || count < high) {
                        const int64_t next = high >= 0 ? count + 1 : std::min(count + 1, low);
                        successors.push_back(push(push(base, m, next), static_cast<int32_t>(net_.counter_item[m]), 0));
                    }
                }
                if (finishes) {
                    if (base != kEmptyStack)
                        successors.push_back(base);
                    else
                        value.accepting = true;
                }
            }
            for (int32_t next : successors)
                if (mark(next, epoch)) work.push_back(next);
        }
        sort_unique(value.stacks);
        if (static_cast<int64_t>(expand_cache_.size()) >= limits_.max_cached_expansions) expand_cache_.clear();
        return expand_cache_.emplace(start, std::move(value)).first->second;
    }

    // Marks `stack` as seen in the expansion `epoch`; false where it was already.
    bool mark(int32_t stack, uint32_t epoch) {
        if (seen_.size() <= static_cast<size_t>(stack)) seen_.resize(std::max<size_t>(frames_.size(), stack + 1), 0);
        if (seen_[stack] == epoch) return false;
        seen_[stack] = epoch;
        return true;
    }

    // A fresh expansion's mark (all marks cleared when the counter wraps).
    uint32_t next_epoch() {
        if (++epoch_ == 0) {
            std::fill(seen_.begin(), seen_.end(), 0);
            epoch_ = 1;
        }
        return epoch_;
    }

    Network net_;
    Limits limits_;
    PyObject* error_;
    std::string too_many_frames_, too_many_stacks_, too_deep_;
    std::vector<std::vector<int32_t>> closures_;
    std::vector<int8_t> tails_;  // -1: not known yet
    std::vector<Frame> frames_;
    std::unordered_map<FrameKey, int32_t, FrameKeyHash> frame_ids_;
    std::vector<int64_t> config_offsets_;
    std::vector<int32_t> config_stacks_;
    std::vector<bool> accepting_;
    std::vector<int64_t> allowed_offsets_;
    std::vector<int32_t> allowed_lexemes_;
    std::unordered_multimap<uint64_t, int32_t> config_ids_;
    std::unordered_map<uint64_t, int32_t> advance_cache_;
    std::unordered_map<int32_t, Expansion> expand_cache_;
    // The expansion's scratch: stacks seen (by the epoch that saw them) and its work lists, kept
    // between calls so that an expansion allocates nothing but its result.
    std::vector<uint32_t> seen_;
    uint32_t epoch_ = 0;
    std::vector<int32_t> work_, successors_;
    int64_t num_frames_ = 0;
};

// ---- the Python type ------------------------------------------------------------------------

struct ConfigurationsObject {
    PyObject_HEAD Configurations* impl;
};

template <typename F>
PyObject* guarded(F body) {
    try {
        return body();
    } catch (const PythonError&) {
    } catch (const std::bad_alloc&) {
        PyErr_NoMemory();
    }
    return nullptr;
}

bool read_ints(PyObject* object, std::vector<int64_t>& out) {
    PyObject* sequence = PySequence_Fast(object, "the network's arrays must be sequences of ints");
    if (sequence == nullptr) return false;
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(sequence);
    out.resize(static_cast<size_t>(n));
    for (Py_ssize_t i = 0; i < n; ++i) {
        out[i] = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(sequence, i));
        if (out[i] == -1 && PyErr_Occurred()) {
            Py_DECREF(sequence);
            return false;
        }
    }
    Py_DECREF(sequence);
    return true;
}

// Whether the network's edges all lead to nodes that exist (a bad one would read out of bounds).
bool valid_network(const Network& n) {
    const int64_t size = static_cast<int64_t>(n.size());
    auto nodes_ok = [size](const std::vector<int64_t>& v, int64_t low) {
        return std::all_of(v.begin(), v.end(), [&](int64_t x) { return x >= low && x < size; });
    };
    auto offsets_ok = [size](const std::vector<int64_t>& o, size_t edges) {
        return static_cast<int64_t>(o.size()) == size + 1 && o.front() == 0 &&
               static_cast<size_t>(o.back()) == edges && std::is_sorted(o.begin(), o.end());
    };
    return size < INT32_MAX && n.counter_low.size() == n.size() && n.counter_high.size() == n.size() &&
           n.counter_item.size() == n.size() && offsets_ok(n.lexeme_offsets, n.lexemes.size()) &&
           n.lexeme_targets.size() == n.lexemes.size() && offsets_ok(n.call_offsets, n.callees.size()) &&
           n.returns.size() == n.callees.size() && offsets_ok(n.eps_offsets, n.eps_targets.size()) &&
           nodes_ok(n.lexeme_targets, 0) && nodes_ok(n.callees, 0) && nodes_ok(n.returns, 0) &&
           nodes_ok(n.eps_targets, 0) && nodes_ok(n.counter_item, -1) &&
           std::all_of(n.lexemes.begin(), n.lexemes.end(), [](int64_t x) { return x >= 0 && x < INT32_MAX; });
}

// Configurations(network: 12 int sequences, limits: 5 ints, error: type, messages: 3 str)
PyObject* configurations_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
    static const char* keywords[] = {"network", "limits", "error", "messages", nullptr};
    PyObject *network_object, *error;
    Limits limits;
    const char *too_many_frames, *too_many_stacks, *too_deep;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O(LLLLL)O(sss)", const_cast<char**>(keywords), &network_object,
                                     &limits.max_frames, &limits.max_stacks_per_config, &limits.max_expansion_steps,
                                     &limits.max_stack_depth, &limits.max_cached_expansions, &error, &too_many_frames,
                                     &too_many_stacks, &too_deep))
        return nullptr;
    if (!PyExceptionClass_Check(error)) {
        PyErr_SetString(PyExc_TypeError, "Configurations: error must be an exception class");
        return nullptr;
    }
    Network net;
    std::vector<int64_t>* arrays[] = {&net.lexeme_offsets, &net.lexemes,     &net.lexeme_targets, &net.call_offsets,
                                      &net.callees,        &net.returns,     &net.eps_offsets,    &net.eps_targets,
                                      &net.finals,         &net.counter_low, &net.counter_high,   &net.counter_item};
    PyObject* parts = PySequence_Fast(network_object, "Configurations: network must be a sequence");
    if (parts == nullptr) return nullptr;
    const bool sized = PySequence_Fast_GET_SIZE(parts) == 12;
    bool ok = sized;
    for (Py_ssize_t i = 0; ok && i < 12; ++i) ok = read_ints(PySequence_Fast_GET_ITEM(parts, i), *arrays[i]);
    Py_DECREF(parts);
    if (!ok) {
        if (!sized) PyErr_SetString(PyExc_ValueError, "Configurations: network must hold 12 arrays");
        return nullptr;
    }
    if (net.size() == 0 || !valid_network(net)) {
        PyErr_SetString(PyExc_ValueError, "Configurations: the network's arrays are inconsistent");
        return nullptr;
    }
    auto* self = reinterpret_cast<ConfigurationsObject*>(type->tp_alloc(type, 0));
    if (self == nullptr) return nullptr;
    try {
        self->impl = new Configurations(std::move(net), limits, error, too_many_frames, too_many_stacks, too_deep);
    } catch (const std::bad_alloc&) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    return reinterpret_cast<PyObject*>(self);
}

void configurations_dealloc(ConfigurationsObject* self) {
    delete self->impl;
    Py_TYPE(self)->tp_free(reinterpret_cast<PyObject*>(self));
}

bool read_config(ConfigurationsObject* self, PyObject* arg, int32_t& config) {
    const long long id = PyLong_AsLongLong(arg);
    if (id == -1 && PyErr_Occurred()) return false;
    if (id < 0 || static_cast<size_t>(id) >= self->impl->num_configs()) {
        PyErr_Format(PyExc_IndexError, "no parser configuration %lld", id);
        return false;
    }
    config = static_cast<int32_t>(id);
    return true;
}

PyObject* configurations_start(ConfigurationsObject* self, PyObject* arg) {
    const long long node = PyLong_AsLongLong(arg);
    if (node == -1 && PyErr_Occurred()) return nullptr;
    if (node < 0 || static_cast<size_t>(node) >= self->impl->num_nodes())
        return PyErr_Format(PyExc_IndexError, "no parser node %lld", node);
    return guarded([&]() -> PyObject* { return PyLong_FromLong(self->impl->start(static_cast<int32_t>(node))); });
}

PyObject* configurations_advance(ConfigurationsObject* self, PyObject* const* args, Py_ssize_t nargs) {
    int32_t config;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "advance(config, lexeme) takes 2 arguments");
        return nullptr;
    }
    if (!read_config(self, args[0], config)) return nullptr;
    const long long lexeme = PyLong_AsLongLong(args[1]);
    if (lexeme == -1 && PyErr_Occurred()) return nullptr;
    if (lexeme < 0 || lexeme >= INT32_MAX) return PyErr_Format(PyExc_IndexError, "no lexeme %lld", lexeme);
    return guarded([&]() -> PyObject* {
        const int32_t result = self->impl->advance(config, static_cast<int32_t>(lexeme));
        if (result == kNone) Py_RETURN_NONE;
        return PyLong_FromLong(result);
    });
}

PyObject* configurations_join(ConfigurationsObject* self, PyObject* arg) {
    PyObject* sequence = PySequence_Fast(arg, "join: configs must be a sequence");
    if (sequence == nullptr) return nullptr;
    std::vector<int32_t> configs(static_cast<size_t>(PySequence_Fast_GET_SIZE(sequence)));
    for (size_t i = 0; i < configs.size(); ++i) {
        if (!read_config(self, PySequence_Fast_GET_ITEM(sequence, static_cast<Py_ssize_t>(i)), configs[i])) {
            Py_DECREF(sequence);
            return nullptr;
        }
    }
    Py_DECREF(sequence);
    return guarded([&]() -> PyObject* { return PyLong_FromLong(self->impl->join(configs)); });
}

PyObject* configurations_allowed(ConfigurationsObject* self, PyObject* arg) {
    int32_t config;
    if (!read_config(self, arg, config)) return nullptr;
    const int64_t n = self->impl->num_allowed(config);
    const int32_t* lexemes = self->impl->allowed(config);
    PyObject* result = PyTuple_New(static_cast<Py_ssize_t>(n));
    if (result == nullptr) return nullptr;
    for (int64_t i = 0; i < n; ++i) PyTuple_SET_ITEM(result, i, PyLong_FromLong(lexemes[i]));
    return result;
}

PyObject* configurations_accepting(ConfigurationsObject* self, PyObject* arg) {
    int32_t config;
    if (!read_config(self, arg, config)) return nullptr;
    return PyBool_FromLong(self->impl->accepting(config));
}

// stacks(config) -> frozenset of stacks, each a tuple of (node, count) frames, bottom first.
PyObject* configurations_stacks(ConfigurationsObject* self, PyObject* arg) {
    int32_t config;
    if (!read_config(self, arg, config)) return nullptr;
    const Configurations& impl = *self->impl;
    PyObject* result = PyFrozenSet_New(nullptr);
    if (result == nullptr) return nullptr;
    const int32_t* stacks = impl.stacks(config);
    for (int64_t i = 0; i < impl.num_stacks(config); ++i) {
        int32_t stack = stacks[i];
        PyObject* frames = PyTuple_New(impl.frame(stack).depth);
        if (frames == nullptr) {
            Py_DECREF(result);
            return nullptr;
        }
        for (Py_ssize_t at = impl.frame(stack).depth - 1; at >= 0; --at, stack = impl.frame(stack).below) {
            PyObject* frame = Py_BuildValue("(iL)", impl.frame(stack).node, static_cast<long long>(impl.frame(stack).count));
            if (frame == nullptr) {
                Py_DECREF(frames);
                Py_DECREF(result);
                return nullptr;
            }
            PyTuple_SET_ITEM(frames, at, frame);
        }
        const int added = PySet_Add(result, frames);
        Py_DECREF(frames);
        if (added < 0) {
            Py_DECREF(result);
            return nullptr;
        }
    }
    return result;
}

PyObject* configurations_num_configs(ConfigurationsObject* self, PyObject*) {
    return PyLong_FromSize_t(self->impl->num_configs());
}

PyObject* configurations_num_frames(ConfigurationsObject* self, PyObject*) {
    return PyLong_FromLongLong(self->impl->num_frames());
}

PyObject* configurations_held_bytes(ConfigurationsObject* self, PyObject*) {
    return PyLong_FromSize_t(self->impl->held_bytes());
}

PyMethodDef configurations_methods[] = {
    {"start", reinterpret_cast<PyCFunction>(configurations_start), METH_O,
     "The configuration of one stack holding one frame (node, 0), expanded."},
    {"advance", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(configurations_advance)), METH_FASTCALL,
     "The configuration after consuming a lexeme, or None if no stack can consume it."},
    {"join", reinterpret_cast<PyCFunction>(configurations_join), METH_O,
     "The configuration holding the stacks of all the given configurations."},
    {"allowed", reinterpret_cast<PyCFunction>(configurations_allowed), METH_O,
     "The sorted lexemes some stack of a configuration can consume next."},
    {"accepting", reinterpret_cast<PyCFunction>(configurations_accepting), METH_O,
     "Whether the input may end in a configuration."},
    {"stacks", reinterpret_cast<PyCFunction>(configurations_stacks), METH_O,
     "A configuration's stacks: a frozenset of tuples of (node, count) frames, bottom first."},
    {"num_configs", reinterpret_cast<PyCFunction>(configurations_num_configs), METH_NOARGS,
     "How many configurations exist."},
    {"num_frames", reinterpret_cast<PyCFunction>(configurations_num_frames), METH_NOARGS,
     "Stack frames held by all configurations (the MAX_FRAMES budget)."},
    {"held_bytes", reinterpret_cast<PyCFunction>(configurations_held_bytes), METH_NOARGS,
     "Bytes the configurations, their memos and the network hold (hash tables estimated)."},
    {nullptr, nullptr, 0, nullptr},
};

PyTypeObject ConfigurationsType = {PyVarObject_HEAD_INIT(nullptr, 0)};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_parser", "Compiled configurations of the parser's network.", -1,
                      nullptr};

}  // namespace

PyMODINIT_FUNC PyInit__parser() {
    ConfigurationsType.tp_name = "grammars.core._parser.Configurations";
    ConfigurationsType.tp_basicsize = sizeof(ConfigurationsObject);
    ConfigurationsType.tp_flags = Py_TPFLAGS_DEFAULT;
    ConfigurationsType.tp_doc = "Hash-consed configurations of a parser network, advanced as grammars.core.parser.";
    ConfigurationsType.tp_new = configurations_new;
    ConfigurationsType.tp_dealloc = reinterpret_cast<destructor>(configurations_dealloc);
    ConfigurationsType.tp_methods = configurations_methods;
    if (PyType_Ready(&ConfigurationsType) < 0) return nullptr;
    PyObject* m = PyModule_Create(&module);
    if (m == nullptr) return nullptr;
    Py_INCREF(&ConfigurationsType);
    if (PyModule_AddObject(m, "Configurations", reinterpret_cast<PyObject*>(&ConfigurationsType)) < 0) {
        Py_DECREF(&ConfigurationsType);
        Py_DECREF(m);
        return nullptr;
    }
    return m;
}
