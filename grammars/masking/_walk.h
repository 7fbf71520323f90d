// What the translation units of the compiled walk (`grammars.masking._walk`) share: views of the
// Python buffers they read, the byte classes of JSON string text, the lexer's tables and the trie as
// one walk sees them, the loop answers and results of a walk, and `Walk` itself, which the settle
// runs again for each boundary group. Who defines what:
//   _walk_trie.cpp    build_trie: the vocabulary as a byte trie (built once per vocabulary);
//   _walk_nodes.cpp   Walk and walk_nodes / walk_vocabulary: the trie walked through the lexer DFA;
//   _walk_settle.cpp  settle and its caches: boundary groups walked on through the parser;
//   _walk_masks.cpp   a mask's bits: their identity (one array per distinct mask) and bool array;
//   _walk_module.cpp  the Python module and its method table.
#pragma once

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <unordered_map>
#include <vector>

#include "../core/_lexer_filler.h"

namespace stencil_walk {


constexpr int32_t kDead = 0;

// The bytes of plain JSON string text (printable ASCII but `"` and backslash): most of a vocabulary's bytes,
// and the bytes a string's inside takes back to the same state. Where a node's whole subtree is
// plain and the state it leads to loops on every plain byte, the walk takes the subtree as a whole.
constexpr bool is_plain(uint8_t byte) { return byte >= 0x20 && byte < 0x7f && byte != '"' && byte != '\\'; }

// The same for text beyond ASCII: plain bytes and well-formed multi-byte UTF-8 characters. A large
// vocabulary holds tens of thousands of non-ASCII tokens (Gemma 3: 112k of 262k), and a string's
// inside takes every such character back to the state it began in. `utf8_next` is the UTF-8
// decoder of that text (RFC 3629: no overlong forms, surrogates or code points past U+10FFFF): the
// decoder state after `byte`, or -1 where the text cannot take it.
enum Utf8State : int8_t { kBoundary, kTail1, kTail2, kTail3, kAfterE0, kAfterED, kAfterF0, kAfterF4, kUtf8States };

constexpr bool is_tail(uint8_t byte) { return byte >= 0x80 && byte <= 0xbf; }

constexpr int8_t utf8_next(int8_t state, uint8_t byte) {
    switch (state) {
        case kBoundary:
            if (byte < 0x80) return is_plain(byte) ? kBoundary : -1;
            if (byte >= 0xc2 && byte <= 0xdf) return kTail1;
            if (byte == 0xe0) return kAfterE0;
            if (byte == 0xed) return kAfterED;
            if (byte >= 0xe1 && byte <= 0xef) return kTail2;
            if (byte == 0xf0) return kAfterF0;
            if (byte >= 0xf1 && byte <= 0xf3) return kTail3;
            return byte == 0xf4 ? kAfterF4 : -1;
        case kTail1: return is_tail(byte) ? kBoundary : -1;
        case kTail2: return is_tail(byte) ? kTail1 : -1;
        case kTail3: return is_tail(byte) ? kTail2 : -1;
        case kAfterE0: return byte >= 0xa0 && byte <= 0xbf ? kTail1 : -1;
        case kAfterED: return byte >= 0x80 && byte <= 0x9f ? kTail1 : -1;
        case kAfterF0: return byte >= 0x90 && byte <= 0xbf ? kTail2 : -1;
        case kAfterF4: return byte >= 0x80 && byte <= 0x8f ? kTail2 : -1;
        default: return -1;
    }
}

// Bits of `node_text_below` (see `build_trie`).
constexpr uint8_t kPlainBelow = 1, kTextBelow = 2;

// A buffer view released on scope exit.
struct View {
    Py_buffer buffer{};
    bool held = false;
    ~View() { release(); }
    bool get(PyObject* object, const char* what, Py_ssize_t itemsize) {
        if (PyObject_GetBuffer(object, &buffer, PyBUF_C_CONTIGUOUS) != 0) return false;
        held = true;
        if (buffer.itemsize != itemsize) {
            PyErr_Format(PyExc_TypeError, "%s: expected items of %zd bytes, got %zd", what, itemsize,
                         buffer.itemsize);
            return false;
        }
        return true;
    }
    void release() {
        if (held) PyBuffer_Release(&buffer);
        held = false;
    }
    Py_ssize_t count() const { return buffer.len / buffer.itemsize; }
    template <typename T>
    const T* data() const { return static_cast<const T*>(buffer.buf); }
};

// Immutable bytes, not a bytearray: numpy views bytes directly, where a bytearray's view holds a
// memoryview and its buffer, two objects the garbage collector tracks for as long as a cached walk.
template <typename T>
PyObject* bytes_of(const std::vector<T>& values) {
    return PyBytes_FromStringAndSize(reinterpret_cast<const char*>(values.data()),
                                     static_cast<Py_ssize_t>(values.size() * sizeof(T)));
}

// A trie node waiting to be walked: its byte is read from `state` (parked where that has no row yet).
struct Parked {
    int64_t node;
    int32_t state;
};

// Boundary subtrees grouped by (state before the ending byte, position of that byte).
class Boundaries {
   public:
    void add(int32_t before, int32_t position, int64_t node) {
        const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(before)) << 32) | static_cast<uint32_t>(position);
        if (last_ == groups_.size() || groups_[last_].first != key) {  // siblings often share a group
            auto found = index_.try_emplace(key, groups_.size());
            if (found.second) groups_.push_back({key, {}});
            last_ = found.first->second;
        }
        groups_[last_].second.push_back(node);
    }
    // Calls visit(before, position, nodes) per group, sorted by (before, position).
    template <typename Visit>
    void each(Visit visit) {
        std::sort(groups_.begin(), groups_.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
        for (const auto& [key, nodes] : groups_)
            visit(static_cast<int32_t>(key >> 32), static_cast<int32_t>(key & 0xffffffffu), nodes);
    }
    // [(before, position, nodes as an int64 bytearray)] sorted by (before, position).
    PyObject* to_list() {
        std::sort(groups_.begin(), groups_.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
        PyObject* list = PyList_New(static_cast<Py_ssize_t>(groups_.size()));
        if (list == nullptr) return nullptr;
        for (size_t i = 0; i < groups_.size(); ++i) {
            const uint64_t key = groups_[i].first;
            PyObject* group = Py_BuildValue("(iiN)", static_cast<int32_t>(key >> 32), static_cast<int32_t>(key & 0xffffffffu),
                                            bytes_of(groups_[i].second));
            if (group == nullptr) {
                Py_DECREF(list);
                return nullptr;
            }
            PyList_SET_ITEM(list, static_cast<Py_ssize_t>(i), group);
        }
        return list;
    }

   private:
    std::vector<std::pair<uint64_t, std::vector<int64_t>>> groups_;
    std::unordered_map<uint64_t, size_t> index_;
    size_t last_ = 0;
};

// A consistent view of the lexer's tables, from `tables()`.
struct Tables {
    View trans, has_row, has_entry, accepting;
    const int32_t* next_of = nullptr;
    const uint8_t* known = nullptr;
    const uint64_t* entries = nullptr;
    const uint8_t* accepts = nullptr;
    int64_t num_states = 0;  // a state past a snapshot's tables (newer than it) counts as missing

    bool take(PyObject* tables) {
        PyObject* snapshot = PyObject_CallNoArgs(tables);
        if (snapshot == nullptr) return false;
        bool ok = PyTuple_Check(snapshot) && PyTuple_GET_SIZE(snapshot) == 4 &&
                  trans.get(PyTuple_GET_ITEM(snapshot, 0), "trans", 4) &&
                  has_row.get(PyTuple_GET_ITEM(snapshot, 1), "has_row", 1) &&
                  has_entry.get(PyTuple_GET_ITEM(snapshot, 2), "has_entry", 8) &&
                  accepting.get(PyTuple_GET_ITEM(snapshot, 3), "accepting", 1);
        Py_DECREF(snapshot);  // the views keep the arrays alive
        if (!ok) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "tables() must return four arrays");
            return false;
        }
        next_of = trans.data<int32_t>();
        known = has_row.data<uint8_t>();
        entries = has_entry.data<uint64_t>();
        accepts = accepting.data<uint8_t>();
        num_states = std::min<int64_t>({trans.count() / 256, has_row.count(), has_entry.count() / 4, accepting.count()});
        return true;
    }
    void release() {
        trans.release();
        has_row.release();
        has_entry.release();
        accepting.release();
    }
    // Whether the successor of `state` on `byte` is in `trans` (DEAD there may be unknown).
    bool has_successor(int32_t state, uint8_t byte) const {
        return state < num_states &&
               (known[state] || (entries[static_cast<int64_t>(state) * 4 + (byte >> 6)] >> (byte & 63)) & 1);
    }
};

// The trie's arrays (see `build_trie`), viewed for one walk.
struct Trie {
    View byte_view, end_view, depth_view, first_view, order_view, below_view;
    const uint8_t* byte = nullptr;
    const int32_t* end = nullptr;
    const int32_t* depth = nullptr;
    const int32_t* first_token = nullptr;
    const int64_t* order = nullptr;
    const uint8_t* text_below = nullptr;
    int64_t num_nodes = 0;

    bool take(PyObject* trie) {
        if (!PyTuple_Check(trie) || PyTuple_GET_SIZE(trie) != 6) {
            PyErr_SetString(PyExc_TypeError, "trie must be the 6-tuple build_trie returns");
            return false;
        }
        if (!byte_view.get(PyTuple_GET_ITEM(trie, 0), "node_byte", 1) ||
            !end_view.get(PyTuple_GET_ITEM(trie, 1), "node_end", 4) ||
            !depth_view.get(PyTuple_GET_ITEM(trie, 2), "node_depth", 4) ||
            !first_view.get(PyTuple_GET_ITEM(trie, 3), "node_first_token", 4) ||
            !order_view.get(PyTuple_GET_ITEM(trie, 4), "order", 8) ||
            !below_view.get(PyTuple_GET_ITEM(trie, 5), "node_text_below", 1))
            return false;
        num_nodes = byte_view.count();
        if (end_view.count() != num_nodes || depth_view.count() != num_nodes || first_view.count() != num_nodes + 1 ||
            below_view.count() != num_nodes) {
            PyErr_SetString(PyExc_ValueError, "trie arrays of inconsistent lengths");
            return false;
        }
        byte = byte_view.data<uint8_t>();
        end = end_view.data<int32_t>();
        depth = depth_view.data<int32_t>();
        first_token = first_view.data<int32_t>();
        order = order_view.data<int64_t>();
        text_below = below_view.data<uint8_t>();
        return true;
    }
};

// The rows inside a lexeme after their last byte, as ranges of positions in the trie's `order`: a
// subtree taken whole is one range, and the nodes of a node-by-node walk, visited in preorder, extend
// the last range while nothing between them was dropped. A wide state's walk is then a few thousand
// ranges, not a quarter million rows copied twice.
struct Inside {
    std::vector<std::pair<int32_t, int32_t>> ranges;

    void add(int32_t from, int32_t to) {
        if (from == to) return;
        if (!ranges.empty() && ranges.back().second == from)
            ranges.back().second = to;
        else
            ranges.push_back({from, to});
    }
    int64_t count() const {
        int64_t total = 0;
        for (const auto& [from, to] : ranges) total += to - from;
        return total;
    }
    // Calls visit(by_position[at]) for each position `at` in the ranges, in order (`order` gives rows).
    template <typename Visit>
    void each_row(const int64_t* by_position, Visit visit) const {
        for (const auto& [from, to] : ranges)
            for (int32_t at = from; at < to; ++at) visit(by_position[at]);
    }
    // Calls visit(at) for each position `at` in [0, num_positions) outside the ranges, in order. The
    // ranges (out of preorder where parked subtrees resumed) are marked in a bitmap of the positions:
    // sorting the few thousand of a wide walk took ~1.5% of a cold pass.
    template <typename Visit>
    void each_gap(int32_t num_positions, Visit visit) const {
        std::vector<uint64_t> covered((static_cast<size_t>(num_positions) + 63) / 64, 0);
        for (const auto& [from, to] : ranges) {
            const int32_t first = from >> 6, last = (to - 1) >> 6;
            const uint64_t head = ~0ull << (from & 63), tail = ~0ull >> (63 - ((to - 1) & 63));
            if (first == last) {
                covered[first] |= head & tail;
                continue;
            }
            covered[first] |= head;
            for (int32_t word = first + 1; word < last; ++word) covered[word] = ~0ull;
            covered[last] |= tail;
        }
        for (size_t word = 0; word < covered.size(); ++word) {
            uint64_t gaps = ~covered[word];
            const int32_t base = static_cast<int32_t>(word) * 64;
            if (num_positions - base < 64) gaps &= (1ull << (num_positions - base)) - 1;
            for (; gaps != 0; gaps &= gaps - 1) visit(base + __builtin_ctzll(gaps));
        }
    }
    std::vector<int64_t> rows(const int64_t* order) const {
        std::vector<int64_t> rows;
        rows.reserve(static_cast<size_t>(count()));
        each_row(order, [&](int64_t row) { rows.push_back(row); });
        return rows;
    }
};

// Which states loop on plain bytes and on text, by state: shared by the walks of one call (a
// settle walks many groups, each from a few states), decided once each. A row computed later
// changes no decided answer; answers waiting on a row are asked again after the rows are filled.
// Its arrays span the lexer's states (tens of thousands): a call borrows the arrays of the last
// call on its thread (`LoopsLease`) and `reset` forgets only what that call decided.
struct Loops {
    std::vector<int8_t> plain;  // 1 where every plain byte leads back to the state, 0 not (or row unknown), -1 undecided
    // what `text_loop` found: kLoops, kNoLoop, kUnknown, or the state whose row it lacks
    std::vector<int32_t> text;
    std::vector<int32_t> undecided;  // the states of `text` waiting on a row
    std::vector<int32_t> unknown_rows;  // the states `plain` answered false for, their rows not known
    std::vector<int32_t> decided_plain, decided_text;  // what `reset` forgets
    static constexpr int32_t kUnknown = -1, kLoops = -2, kNoLoop = -3;

    void reset() {
        forget_undecided();
        for (int32_t state : decided_plain) plain[state] = -1;
        for (int32_t state : decided_text) text[state] = kUnknown;
        decided_plain.clear();
        decided_text.clear();
        undecided.clear();
    }

    // Whether every plain byte leads `state` back to it: `plain[state]` once decided, else decided here.
    // A state whose row is not known yet answers false (its subtrees are walked node by node) until
    // rows are filled (`forget_undecided`), so a walk reads `plain` alone for every node but the first
    // of each state. Where the walk fills rows as it goes (`filling`), that answer is not kept: the row
    // may be written a node later.
    bool on_plain(const Tables& t, int32_t state, bool filling) {
        if (static_cast<int64_t>(plain.size()) <= state) plain.resize(state + 1, -1);
        if (plain[state] < 0) {
            if (state >= t.num_states || !t.known[state]) {
                if (filling) return false;
                plain[state] = 0;
                unknown_rows.push_back(state);
                return false;
            }
            const int32_t* row = t.next_of + static_cast<int64_t>(state) * 256;
            bool loops = true;
            for (int byte = 0; byte < 256 && loops; ++byte) loops = !is_plain(static_cast<uint8_t>(byte)) || row[byte] == state;
            plain[state] = loops;
            decided_plain.push_back(state);
        }
        return plain[state] == 1;
    }

    // Whether every UTF-8 text character (`utf8_next`) leads from `state` back to it, through live
    // states: then a subtree whose bytes are such text, its tokens perhaps ending inside a character,
    // stays inside. kLoops, kNoLoop, or a state whose row the answer needs first (the walk has it
    // computed, parking the node where it cannot at once: the states inside characters may be rows no
    // token has needed yet; `again` decides anew after such a row is written). Asked only where
    // `state` loops on plain bytes, which most states fail at their first one.
    int32_t on_text(const Tables& t, int32_t state, bool again = false) {
        if (static_cast<int64_t>(text.size()) <= state) text.resize(state + 1, kUnknown);
        if (text[state] == kUnknown || again) {
            text[state] = text_loop(t, state);
            decided_text.push_back(state);
            if (text[state] >= 0) undecided.push_back(state);
        }
        return text[state];
    }

    // Decided on the product of the lexer and the decoder, from (state, kBoundary).
    static int32_t text_loop(const Tables& t, int32_t state) {
        constexpr size_t kMaxPairs = 64;  // a string's inside needs a few: past that, walk node by node
        std::vector<std::pair<int32_t, int8_t>> pairs{{state, kBoundary}};
        for (size_t at = 0; at < pairs.size(); ++at) {
            const auto [lexer, decoder] = pairs[at];
            if (lexer >= t.num_states || !t.known[lexer]) return lexer;
            const int32_t* row = t.next_of + static_cast<int64_t>(lexer) * 256;
            for (int byte = 0; byte < 256; ++byte) {
                const int8_t after = utf8_next(decoder, static_cast<uint8_t>(byte));
                if (after < 0) continue;
                const int32_t next = row[byte];
                if (next == kDead || (after == kBoundary && next != state)) return kNoLoop;
                if (after == kBoundary) continue;
                const std::pair<int32_t, int8_t> pair{next, after};
                if (std::find(pairs.begin(), pairs.end(), pair) == pairs.end()) {
                    if (pairs.size() == kMaxPairs) return kNoLoop;
                    pairs.push_back(pair);
                }
            }
        }
        return kLoops;
    }

    void forget_undecided() {
        for (int32_t state : undecided) text[state] = kUnknown;
        undecided.clear();
        for (int32_t state : unknown_rows) plain[state] = -1;
        unknown_rows.clear();
    }
};

// The Loops of one call: this thread's reused arrays (reset), or fresh ones where a call on this
// thread holds those already (a walk run from another's row callback, perhaps of another lexer).
// Fresh arrays grow to the highest state a call asks about: ~350 KB allocated and set per walk of a
// new state once the lexer has ~70k states.
class LoopsLease {
   public:
    LoopsLease() : reused_(!in_use_) {
        if (reused_) {
            in_use_ = true;
            shared_.reset();
        }
    }
    ~LoopsLease() {
        if (reused_) in_use_ = false;
    }
    LoopsLease(const LoopsLease&) = delete;
    LoopsLease& operator=(const LoopsLease&) = delete;
    Loops& loops() { return reused_ ? shared_ : own_; }

   private:
    static thread_local Loops shared_;
    static thread_local bool in_use_;
    bool reused_;
    Loops own_;
};

// What a walk asks the lexer for: whole rows (`Loops::on_text` reads them), and single transitions
// (`state * 256 + byte`). Most parked nodes need a transition that a node parked shortly before
// needs too (the nodes of one byte at one depth below one state), so `ask_entry` drops the entries it
// finds in a small direct-mapped table of recent ones: sorting every parked node's entry took ~3%
// of a cold pass. What slips through is dropped by the sort in `Walk::ask`.
class Missing {
   public:
    std::vector<int32_t> rows;
    std::vector<int64_t> entries;

    Missing() { recent_.fill(-1); }
    bool empty() const { return rows.empty() && entries.empty(); }
    void ask_entry(int64_t entry) {
        int64_t& slot = recent_[static_cast<uint64_t>(entry) * 0x9E3779B97F4A7C15ull >> (64 - kRecentBits)];
        if (slot == entry) return;
        slot = entry;
        entries.push_back(entry);
    }
    // Forgets the round's requests (the next round asks again for what is still missing).
    void clear() {
        rows.clear();
        entries.clear();
        recent_.fill(-1);
    }

   private:
    static constexpr int kRecentBits = 10;
    std::array<int64_t, 1 << kRecentBits> recent_;
};

// The `LexerFiller` in `object` (a capsule of `Store.walk_filler`), or null for None (false: an error is set).
bool filler_of(PyObject* object, const stencil_lexer::LexerFiller*& filler);

// One walk's results so far, and the nodes parked where a transition is not known yet.
struct Walk {
    const Trie& trie;
    Loops& loops;
    Inside inside;
    Boundaries boundaries;
    std::vector<Parked> parked;
    // Where set, missing transitions are written as the walk meets them, in C++; a node is parked only
    // where it cannot write one. Dropped once `fill` has run: Python may have grown the tables it writes.
    const stencil_lexer::LexerFiller* filler = nullptr;
    bool failed = false;  // the filler set an error: the walk stops

    // Walks the parked nodes' subtrees to their ends, asking `fill` for missing transitions (false: an
    // error is set).
    bool finish(PyObject* tables, PyObject* fill);

    // Walks the subtree of `item.node` in preorder, one pass over its nodes: a node whose byte the
    // lexer cannot take skips its subtree (a boundary, or dead), one whose transition is not known yet
    // (and that the filler cannot write) parks it.
    void scan(const Tables& t, const Parked& item, std::vector<int32_t>& state_at, Missing& missing);

    // The successor of `state` on `byte`, which `t` lacks, from the filler: kCannot where there is none
    // or it cannot (`failed` where it set an error).
    int32_t fill_entry(int32_t state, uint8_t byte);

    // `loops.on_text(state)`, with the rows it needs written by the filler where it can.
    int32_t on_text(const Tables& t, int32_t state);

    // Asks `fill(rows, entries)` for the `missing` rows and transitions (each list sorted and distinct).
    static bool ask(PyObject* fill, Missing& missing);
};

// The module's functions (their arguments and results are described where each is defined).
PyObject* build_trie(PyObject*, PyObject* args);  // _walk_trie.cpp
PyObject* walk_nodes(PyObject*, PyObject* args);  // _walk_nodes.cpp
PyObject* walk_vocabulary(PyObject*, PyObject* args);
PyObject* new_group_walks(PyObject*, PyObject* args);  // _walk_settle.cpp
PyObject* new_settler(PyObject*, PyObject* args);
PyObject* group_walks_held(PyObject*, PyObject* capsule);
PyObject* settle(PyObject*, PyObject* args);
PyObject* bits_identity(PyObject*, PyObject* bits_object);  // _walk_masks.cpp
PyObject* identity_of(PyObject* packed);
PyObject* bool_mask(PyObject*, PyObject* args);
PyObject* walked_suspects(PyObject*, PyObject* args);

}  // namespace stencil_walk
