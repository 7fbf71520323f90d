// The compiled vocabulary walk of `grammars.masking.token_walk`: the vocabulary as a byte trie, walked
// through the lexer DFA node by node. Tokens that share a prefix share its transitions, and a byte the
// lexer cannot take drops the whole subtree below it at once: a boundary group is a handful of
// subtrees (every token ` x...` after a space, say), not thousands of tokens, and walking it from
// the next lexeme's start touches only the subtrees whose first byte that lexeme can take.
// Its results are those of the numpy row walk there (`advance_rows_reference`) once each subtree is
// read as the tokens in it.
//
// The lexer DFA is lazy: a state's transition row may not exist yet. The walk parks every node that
// reaches such a state, asks Python (`fill_rows`) to compute the missing rows, takes a fresh view of
// the tables (they may have been reallocated) and resumes the parked nodes where they stopped.
// A state without a row has an all-DEAD row in `trans` (the tables are zero-filled), so `has_row`
// is read only where a transition is DEAD, off the loop's load-to-load dependency chain.
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <cstring>
#include <unordered_map>
#include <vector>

namespace {

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

template <typename T>
PyObject* bytes_of(const std::vector<T>& values) {
    return PyByteArray_FromStringAndSize(reinterpret_cast<const char*>(values.data()),
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
    View trans, has_row, accepting;
    const int32_t* next_of = nullptr;
    const uint8_t* known = nullptr;
    const uint8_t* accepts = nullptr;
    int64_t num_states = 0;  // a state past a snapshot's tables (newer than it) counts as missing

    bool take(PyObject* tables) {
        PyObject* snapshot = PyObject_CallNoArgs(tables);
        if (snapshot == nullptr) return false;
        bool ok = PyTuple_Check(snapshot) && PyTuple_GET_SIZE(snapshot) == 3 &&
                  trans.get(PyTuple_GET_ITEM(snapshot, 0), "trans", 4) &&
                  has_row.get(PyTuple_GET_ITEM(snapshot, 1), "has_row", 1) &&
                  accepting.get(PyTuple_GET_ITEM(snapshot, 2), "accepting", 1);
        Py_DECREF(snapshot);  // the views keep the arrays alive
        if (!ok) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "tables() must return three arrays");
            return false;
        }
        next_of = trans.data<int32_t>();
        known = has_row.data<uint8_t>();
        accepts = accepting.data<uint8_t>();
        num_states = std::min<int64_t>({trans.count() / 256, has_row.count(), accepting.count()});
        return true;
    }
    void release() {
        trans.release();
        has_row.release();
        accepting.release();
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
struct Loops {
    std::vector<int8_t> plain;  // 1 where every plain byte leads back to the state, -1 unknown
    // what `text_loop` found: kLoops, kNoLoop, kUnknown, or the state whose row it lacks
    std::vector<int32_t> text;
    std::vector<int32_t> undecided;  // the states of `text` waiting on a row
    static constexpr int32_t kUnknown = -1, kLoops = -2, kNoLoop = -3;

    bool on_plain(const Tables& t, int32_t state) {
        if (state >= t.num_states || !t.known[state]) return false;  // not known yet: walked node by node
        if (static_cast<int64_t>(plain.size()) <= state) plain.resize(state + 1, -1);
        if (plain[state] < 0) {
            const int32_t* row = t.next_of + static_cast<int64_t>(state) * 256;
            bool loops = true;
            for (int byte = 0; byte < 256 && loops; ++byte) loops = !is_plain(static_cast<uint8_t>(byte)) || row[byte] == state;
            plain[state] = loops;
        }
        return plain[state] == 1;
    }

    // Whether every UTF-8 text character (`utf8_next`) leads from `state` back to it, through live
    // states: then a subtree whose bytes are such text, its tokens perhaps ending inside a character,
    // stays inside. kLoops, kNoLoop, or a state whose row the answer needs first (the walk parks the
    // node and has it computed: the states inside characters may be rows no token has needed yet).
    // Asked only where `state` loops on plain bytes, which most states fail at their first one.
    int32_t on_text(const Tables& t, int32_t state) {
        if (static_cast<int64_t>(text.size()) <= state) text.resize(state + 1, kUnknown);
        if (text[state] == kUnknown) {
            text[state] = text_loop(t, state);
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
    }
};

// One walk's results so far, and the nodes parked at states without a row.
struct Walk {
    const Trie& trie;
    Loops& loops;
    Inside inside;
    Boundaries boundaries;
    std::vector<Parked> parked;

    // Walks the parked nodes' subtrees to their ends, asking `fill_rows` for missing rows (false: an error is set).
    bool finish(PyObject* tables, PyObject* fill_rows) {
        std::vector<Parked> work;
        std::vector<int32_t> missing;
        std::vector<int32_t> state_at;  // by depth: the state after the current node's prefix
        while (!parked.empty()) {
            Tables t;
            if (!t.take(tables)) return false;
            work.swap(parked);
            parked.clear();
            loops.forget_undecided();  // rows were filled: decide again
            missing.clear();
            for (const Parked& item : work) scan(t, item, state_at, missing);
            t.release();
            if (!missing.empty() && !fill(fill_rows, missing)) return false;
        }
        return true;
    }

    // Walks the subtree of `item.node` in preorder, one pass over its nodes: a node whose byte the
    // lexer cannot take skips its subtree (a boundary, or dead), one at a state without a row parks it.
    void scan(const Tables& t, const Parked& item, std::vector<int32_t>& state_at, std::vector<int32_t>& missing) {
        const int64_t stop = trie.end[item.node];
        const int32_t base = trie.depth[item.node];
        if (static_cast<int32_t>(state_at.size()) <= base) state_at.resize(base + 1);
        state_at[base - 1] = item.state;
        for (int64_t node = item.node; node < stop;) {
            const int32_t depth = trie.depth[node];
            const int32_t state = state_at[depth - 1];
            const int32_t next =
                state < t.num_states ? t.next_of[static_cast<int64_t>(state) * 256 + trie.byte[node]] : kDead;
            if (next == kDead) {
                if (state >= t.num_states || !t.known[state]) {
                    parked.push_back({node, state});
                    missing.push_back(state);
                } else if (t.accepts[state]) {
                    boundaries.add(state, depth - 1, node);
                }
                node = trie.end[node];
                continue;
            }
            const uint8_t below = trie.text_below[node];
            const bool has_children = trie.end[node] > node + 1;
            const bool plain_loop = has_children && loops.on_plain(t, next);  // implied by a text loop
            const int32_t text = plain_loop && below & kTextBelow ? loops.on_text(t, next) : Loops::kNoLoop;
            if (text >= 0) {  // undecided until the row of `text` is known
                parked.push_back({node, state});
                missing.push_back(text);
                node = trie.end[node];
                continue;
            }
            if (text == Loops::kLoops || (plain_loop && below & kPlainBelow)) {  // the whole subtree stays inside
                inside.add(trie.first_token[node], trie.first_token[trie.end[node]]);
                node = trie.end[node];
                continue;
            }
            inside.add(trie.first_token[node], trie.first_token[node + 1]);
            if (static_cast<int32_t>(state_at.size()) <= depth) state_at.resize(depth + 1);
            state_at[depth] = next;
            ++node;
        }
    }

    static bool fill(PyObject* fill_rows, std::vector<int32_t>& missing) {
        std::sort(missing.begin(), missing.end());
        missing.erase(std::unique(missing.begin(), missing.end()), missing.end());
        PyObject* states = PyList_New(static_cast<Py_ssize_t>(missing.size()));
        if (states == nullptr) return false;
        for (size_t i = 0; i < missing.size(); ++i) PyList_SET_ITEM(states, i, PyLong_FromLong(missing[i]));
        PyObject* result = PyObject_CallOneArg(fill_rows, states);
        Py_DECREF(states);
        if (result == nullptr) return false;
        Py_DECREF(result);
        return true;
    }
};

// build_trie(data, starts) -> (node_byte, node_end, node_depth, node_first_token, order, node_text_below)
//   data, starts: every token's bytes, row r in data[starts[r]:starts[r+1]] (int64 starts).
// The trie of the rows' bytes with its nodes in preorder, node 0 the root (the empty prefix):
//   node_byte uint8[nodes]: the byte a node adds to its parent's prefix;
//   node_end int32[nodes]: one past the last node of its subtree (its children are node + 1, then
//     each child's node_end in turn, up to the node's own);
//   node_depth int32[nodes]: its prefix's length;
//   order int64[rows]: the rows sorted by bytes, so that the rows ending at node n are
//     order[node_first_token[n]:node_first_token[n + 1]] and those of its whole subtree
//     order[node_first_token[n]:node_first_token[node_end[n]]] (int32 node_first_token[nodes + 1]).
//   node_text_below uint8[nodes]: kPlainBelow where every byte below the node is plain (`is_plain`),
//     kTextBelow where the bytes below it, read from a character boundary after the node, are UTF-8
//     text (`utf8_next`), each token's perhaps ending inside a character.
PyObject* build_trie(PyObject*, PyObject* args) {
    PyObject *data_object, *starts_object;
    if (!PyArg_ParseTuple(args, "OO", &data_object, &starts_object)) return nullptr;
    View data, starts;
    if (!data.get(data_object, "data", 1) || !starts.get(starts_object, "starts", 8)) return nullptr;
    const uint8_t* bytes = data.data<uint8_t>();
    const int64_t* start_of = starts.data<int64_t>();
    const int64_t num_rows = starts.count() - 1;
    if (num_rows < 0 || start_of[num_rows] > data.count()) {
        PyErr_SetString(PyExc_ValueError, "build_trie: starts do not fit data");
        return nullptr;
    }
    std::vector<int64_t> order(static_cast<size_t>(num_rows));
    for (int64_t r = 0; r < num_rows; ++r) order[r] = r;
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
        return std::lexicographical_compare(bytes + start_of[a], bytes + start_of[a + 1], bytes + start_of[b],
                                            bytes + start_of[b + 1]);
    });
    std::vector<uint8_t> node_byte{0};
    std::vector<int32_t> node_end{0}, node_depth{0}, node_first{0};
    std::vector<int32_t> path{0};  // the nodes of the previous row's prefix, root first
    int64_t previous = -1;
    for (size_t i = 0; i < order.size(); ++i) {
        const int64_t row = order[i];
        const uint8_t* token = bytes + start_of[row];
        const int64_t length = start_of[row + 1] - start_of[row];
        int64_t common = 0;
        if (previous >= 0) {
            const uint8_t* last = bytes + start_of[previous];
            const int64_t last_length = start_of[previous + 1] - start_of[previous];
            while (common < length && common < last_length && token[common] == last[common]) ++common;
        }
        while (static_cast<int64_t>(path.size()) > common + 1) {  // leave the subtrees this row is not in
            node_end[path.back()] = static_cast<int32_t>(node_byte.size());
            path.pop_back();
        }
        for (int64_t at = common; at < length; ++at) {
            path.push_back(static_cast<int32_t>(node_byte.size()));
            node_byte.push_back(token[at]);
            node_end.push_back(0);
            node_depth.push_back(static_cast<int32_t>(at + 1));
            node_first.push_back(static_cast<int32_t>(i));  // rows ending here come before its children's
        }
        previous = row;
    }
    while (!path.empty()) {
        node_end[path.back()] = static_cast<int32_t>(node_byte.size());
        path.pop_back();
    }
    node_first.push_back(static_cast<int32_t>(order.size()));
    // Children come after their parent: fill backwards. text_from: by node, the decoder states from
    // which the bytes below it are text (a bit per `Utf8State`; a leaf's, every state).
    std::vector<uint8_t> text_below(node_byte.size()), text_from(node_byte.size());
    for (size_t node = node_byte.size(); node-- > 0;) {
        uint8_t plain = 1, from = 0xff;
        for (size_t child = node + 1; child < static_cast<size_t>(node_end[node]); child = node_end[child]) {
            plain &= is_plain(node_byte[child]) && (text_below[child] & kPlainBelow);
            uint8_t through = 0;
            for (int8_t state = 0; state < kUtf8States; ++state) {
                const int8_t after = utf8_next(state, node_byte[child]);
                if (after >= 0 && (text_from[child] >> after & 1)) through |= static_cast<uint8_t>(1u << state);
            }
            from &= through;
        }
        text_from[node] = from;
        text_below[node] = static_cast<uint8_t>((plain ? kPlainBelow : 0) | (from & 1u << kBoundary ? kTextBelow : 0));
    }
    return Py_BuildValue("(NNNNNN)", bytes_of(node_byte), bytes_of(node_end), bytes_of(node_depth), bytes_of(node_first),
                         bytes_of(order), bytes_of(text_below));
}

// Parks the trie `nodes` (int64, not the root) at lexer state `sid` to start a walk (false: an error is set).
bool start(Walk& walk, PyObject* nodes_object, int sid) {
    View nodes;
    if (!nodes.get(nodes_object, "nodes", 8)) return false;
    walk.parked.reserve(static_cast<size_t>(nodes.count()));
    for (Py_ssize_t i = 0; i < nodes.count(); ++i) {
        const int64_t node = nodes.data<int64_t>()[i];
        if (node <= 0 || node >= walk.trie.num_nodes) {
            PyErr_SetString(PyExc_IndexError, "walk: a trie node out of range (or the root)");
            return false;
        }
        walk.parked.push_back({node, sid});
    }
    return true;
}

// walk_nodes(tables, fill_rows, trie, nodes, sid)
//   tables(): (trans int32[states*256], has_row bool[states], accepting bool[states]), consistent.
//   fill_rows(states: list[int]): computes the rows of `states` (may raise: the walk stops).
//   trie: what `build_trie` returned; nodes: int64 non-root nodes whose bytes are read from `sid`.
// Returns (inside rows as int64 bytearray, [(before, position, nodes as int64 bytearray)]): the rows of
// the nodes' subtrees still inside a lexeme after their last byte, and the subtrees whose byte at
// `position` (the node's depth - 1) ends the lexeme in state `before`, sorted by (before, position).
PyObject* walk_nodes(PyObject*, PyObject* args) {
    PyObject *tables, *fill_rows, *trie_object, *nodes_object;
    int sid;
    if (!PyArg_ParseTuple(args, "OOOOi", &tables, &fill_rows, &trie_object, &nodes_object, &sid)) return nullptr;
    Trie trie;
    if (!trie.take(trie_object)) return nullptr;
    Loops loops;
    Walk walk{trie, loops, {}, {}, {}};
    if (!start(walk, nodes_object, sid) || !walk.finish(tables, fill_rows)) return nullptr;
    return Py_BuildValue("(NN)", bytes_of(walk.inside.rows(trie.order)), walk.boundaries.to_list());
}

// walk_vocabulary(tables, fill_rows, trie, nodes, sid, ordered_ids, size, dense_above)
//   As walk_nodes, with the inside tokens as token ids (`ordered_ids`: the int64 id of each row in
//   trie order, ids[order], read in order along the inside ranges): returns
//   (inside ids as int64 bytearray or None, inside mask as bool bytearray[size] or None, groups),
//   the mask where more than `dense_above` tokens are inside (a wide state: setting them here
//   spares a gather and a scatter over tens of thousands of ids).
PyObject* walk_vocabulary(PyObject*, PyObject* args) {
    PyObject *tables, *fill_rows, *trie_object, *nodes_object, *ids_object;
    int sid;
    Py_ssize_t size, dense_above;
    if (!PyArg_ParseTuple(args, "OOOOiOnn", &tables, &fill_rows, &trie_object, &nodes_object, &sid, &ids_object, &size,
                          &dense_above))
        return nullptr;
    Trie trie;
    View ids;
    if (!trie.take(trie_object) || !ids.get(ids_object, "ordered_ids", 8)) return nullptr;
    if (ids.count() != trie.first_token[trie.num_nodes]) {
        PyErr_SetString(PyExc_ValueError, "walk_vocabulary: one id per row of the trie expected");
        return nullptr;
    }
    Loops loops;
    Walk walk{trie, loops, {}, {}, {}};
    if (!start(walk, nodes_object, sid) || !walk.finish(tables, fill_rows)) return nullptr;
    const bool dense = walk.inside.count() > dense_above;
    std::vector<int64_t> inside_ids;
    std::vector<uint8_t> mask(dense ? static_cast<size_t>(size) : 0, 0);
    bool in_range = true;
    walk.inside.each_row(ids.data<int64_t>(), [&](int64_t id) {
        if (id < 0 || id >= size)
            in_range = false;
        else if (dense)
            mask[id] = 1;
        else
            inside_ids.push_back(id);
    });
    if (!in_range) {
        PyErr_SetString(PyExc_IndexError, "walk_vocabulary: a token id past size");
        return nullptr;
    }
    PyObject* groups = walk.boundaries.to_list();
    if (groups == nullptr) return nullptr;
    if (!dense) return Py_BuildValue("(NON)", bytes_of(inside_ids), Py_None, groups);
    return Py_BuildValue("(ONN)", Py_None, bytes_of(mask), groups);
}

// ---------------------------------------------------------------------------------------------
// Settling boundary groups (`grammars.masking.settle`): the tokens of a group end a lexeme, the
// parser takes the lexeme (`end_lexeme`), the next lexeme starts (`lexer_start`) and the group's
// subtrees are walked on from there, their own boundaries settled in turn, down to the tokens' ends.
// The parser's answers are memoized per automaton here (`ParserEdges`: Python is asked only on a
// miss); the walks of groups depend on lexer states alone, so they are kept per vocabulary
// (`GroupWalks`) and shared by every grammar. Accepted tokens are set in the mask directly.

constexpr int32_t kNoConfig = -1;  // end_lexeme's None: the lexeme cannot end there

// A group's name: (parent, start, before, position). A group of a whole-vocabulary walk has parent
// -1 - lexer generation and start the walk's state; a nested group its parent's id and the start
// its parent was walked from. Equal names mean equal members.
struct GroupName {
    int64_t parent, start, before, position;
    bool operator==(const GroupName& other) const {
        return parent == other.parent && start == other.start && before == other.before && position == other.position;
    }
};

struct GroupNameHash {
    size_t operator()(const GroupName& name) const {
        uint64_t h = static_cast<uint64_t>(name.parent) * 0x9E3779B97F4A7C15ull;
        h ^= static_cast<uint64_t>(name.start) + 0x632BE59BD9B4E019ull + (h << 6) + (h >> 2);
        h ^= static_cast<uint64_t>(name.before) + 0x85EBCA77C2B2AE63ull + (h << 6) + (h >> 2);
        h ^= static_cast<uint64_t>(name.position) + 0xC2B2AE3D27D4EB4Full + (h << 6) + (h >> 2);
        return static_cast<size_t>(h);
    }
};

struct Group {
    int32_t before;
    std::vector<int64_t> members;  // trie nodes
};

// A group walked from a lexeme start: the rows inside a lexeme at their end, and the nested groups.
struct GroupWalk {
    Inside inside;
    std::vector<int32_t> nested;
};

// Per vocabulary: groups by name, and their walks by (group, start); emptied as a whole at the start
// of a settle that finds more than max_walks walks or max_bytes bytes held.
struct GroupWalks {
    std::unordered_map<GroupName, int32_t, GroupNameHash> ids;
    std::vector<Group> groups;
    std::unordered_map<uint64_t, GroupWalk> walks;
    int64_t bytes = 0;
    int64_t max_walks = 0, max_bytes = 0;

    void make_room() {
        if (static_cast<int64_t>(walks.size()) < max_walks && bytes <= max_bytes) return;
        ids.clear();
        groups.clear();
        walks.clear();
        bytes = 0;
    }
    template <typename Members>
    int32_t intern(const GroupName& name, int32_t before, const Members& members) {
        auto found = ids.try_emplace(name, static_cast<int32_t>(groups.size()));
        if (found.second) {
            groups.push_back({before, std::vector<int64_t>(members.begin(), members.end())});
            bytes += static_cast<int64_t>(members.size() * sizeof(int64_t) + sizeof(Group));
        }
        return found.first->second;
    }
};

// Per automaton: end_lexeme by (config, lexer state) and lexer_start by config.
struct ParserEdges {
    std::unordered_map<uint64_t, int32_t> ended;
    std::unordered_map<int32_t, int32_t> starts;
};

constexpr const char* kGroupWalks = "grammars.masking._walk.GroupWalks";
constexpr const char* kParserEdges = "grammars.masking._walk.ParserEdges";

template <typename T>
void destroy_capsule(PyObject* capsule) {
    delete static_cast<T*>(PyCapsule_GetPointer(capsule, PyCapsule_GetName(capsule)));
}

// new_group_walks(max_walks, max_bytes) -> a capsule holding an empty GroupWalks.
PyObject* new_group_walks(PyObject*, PyObject* args) {
    Py_ssize_t max_walks, max_bytes;
    if (!PyArg_ParseTuple(args, "nn", &max_walks, &max_bytes)) return nullptr;
    auto held = std::make_unique<GroupWalks>();
    held->max_walks = max_walks;
    held->max_bytes = max_bytes;
    PyObject* capsule = PyCapsule_New(held.get(), kGroupWalks, destroy_capsule<GroupWalks>);
    if (capsule != nullptr) held.release();
    return capsule;
}

// new_parser_edges() -> a capsule holding empty ParserEdges.
PyObject* new_parser_edges(PyObject*, PyObject*) {
    auto held = std::make_unique<ParserEdges>();
    PyObject* capsule = PyCapsule_New(held.get(), kParserEdges, destroy_capsule<ParserEdges>);
    if (capsule != nullptr) held.release();
    return capsule;
}

// group_walks_held(capsule) -> (walks, bytes): what a GroupWalks holds.
PyObject* group_walks_held(PyObject*, PyObject* capsule) {
    auto* cache = static_cast<GroupWalks*>(PyCapsule_GetPointer(capsule, kGroupWalks));
    if (cache == nullptr) return nullptr;
    return Py_BuildValue("(nn)", static_cast<Py_ssize_t>(cache->walks.size()), static_cast<Py_ssize_t>(cache->bytes));
}

// A state or configuration from a callback's result (None -> kNoConfig where `may_be_none`); false
// with an error set otherwise.
bool int_result(PyObject* result, bool may_be_none, const char* what, int32_t& out) {
    if (result == nullptr) return false;
    if (result == Py_None && may_be_none) {
        Py_DECREF(result);
        out = kNoConfig;
        return true;
    }
    const long value = PyLong_Check(result) ? PyLong_AsLong(result) : -1;
    Py_DECREF(result);
    if (value == -1 && PyErr_Occurred()) return false;
    if (value < 0 || value > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "settle: %s returned no state or configuration", what);
        return false;
    }
    out = static_cast<int32_t>(value);
    return true;
}

struct Settling {
    GroupWalks& cache;
    ParserEdges& edges;
    const Trie& trie;
    PyObject *end_lexeme, *lexer_start, *tables, *fill_rows;
    uint8_t* mask;
    Py_ssize_t size;
    const int64_t* id_of;
    Loops loops{};  // shared by the group walks of this settle

    bool ended(int32_t config, int32_t before, int32_t& out) {
        const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(config)) << 32) | static_cast<uint32_t>(before);
        auto found = edges.ended.find(key);
        if (found != edges.ended.end()) {
            out = found->second;
            return true;
        }
        if (!int_result(PyObject_CallFunction(end_lexeme, "ii", config, before), true, "end_lexeme", out)) return false;
        edges.ended.emplace(key, out);
        return true;
    }

    bool start(int32_t config, int32_t& out) {
        auto found = edges.starts.find(config);
        if (found != edges.starts.end()) {
            out = found->second;
            return true;
        }
        if (!int_result(PyObject_CallFunction(lexer_start, "i", config), false, "lexer_start", out)) return false;
        edges.starts.emplace(config, out);
        return true;
    }

    // The walk of group `id`'s members from lexer state `from` (walked and kept on a miss).
    const GroupWalk* walk(int32_t id, int32_t from) {
        const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(id)) << 32) | static_cast<uint32_t>(from);
        auto found = cache.walks.find(key);
        if (found != cache.walks.end()) return &found->second;
        Walk walk{trie, loops, {}, {}, {}};
        for (int64_t node : cache.groups[id].members) walk.parked.push_back({node, from});
        if (!walk.finish(tables, fill_rows)) return nullptr;
        GroupWalk result;
        result.inside = std::move(walk.inside);
        walk.boundaries.each([&](int32_t before, int32_t position, const std::vector<int64_t>& nodes) {
            result.nested.push_back(cache.intern({id, from, before, position}, before, nodes));
        });
        cache.bytes += static_cast<int64_t>(result.inside.ranges.size() * sizeof(result.inside.ranges[0]) +
                                            result.nested.size() * sizeof(int32_t) + sizeof(GroupWalk));
        return &cache.walks.emplace(key, std::move(result)).first->second;
    }

    // Sets the tokens of group `id` (ending a lexeme after `config`) that the grammar accepts.
    // A fresh lexeme consumes a byte before it can end, so nested groups lie further in the tokens
    // and the recursion ends within the longest token.
    bool settle(int32_t config, int32_t id) {
        int32_t after, from;
        if (!ended(config, cache.groups[id].before, after)) return false;
        if (after == kNoConfig) return true;
        if (!start(after, from)) return false;
        const GroupWalk* walked = walk(id, from);  // node-based map: stays valid while nested walks are added
        if (walked == nullptr) return false;
        bool in_range = true;
        walked->inside.each_row(trie.order, [&](int64_t row) {
            const int64_t token = id_of[row];
            if (token < 0 || token >= size)
                in_range = false;
            else
                mask[token] = 1;
        });
        if (!in_range) {
            PyErr_SetString(PyExc_IndexError, "settle: a token id past the mask");
            return false;
        }
        for (int32_t nested : walked->nested)
            if (!settle(after, nested)) return false;
        return true;
    }
};

// settle(group_walks, parser_edges, mask, ids, config, walk_name, groups, end_lexeme, lexer_start, tables,
//        fill_rows, trie)
//   group_walks, parser_edges: capsules from new_group_walks (of the vocabulary) and new_parser_edges
//     (of the automaton); mask: writable bool[size]; ids: int64 token id of each trie row.
//   walk_name: (lexer generation, state) of the whole-vocabulary walk whose boundary `groups`
//     ([(before, position, nodes as int64)], as walk_vocabulary returns them) end lexemes after `config`.
//   end_lexeme(config, sid) -> int | None and lexer_start(config) -> int: the automaton's, asked on a miss.
//   tables, fill_rows, trie: as walk_nodes.
// Sets in `mask` the tokens of `groups` that the grammar accepts.
PyObject* settle(PyObject*, PyObject* args) {
    PyObject *walks_capsule, *edges_capsule, *mask_object, *ids_object, *groups, *end_lexeme, *lexer_start, *tables,
        *fill_rows, *trie_object;
    int config;
    long long generation, walk_sid;
    if (!PyArg_ParseTuple(args, "OOOOi(LL)O!OOOOO", &walks_capsule, &edges_capsule, &mask_object, &ids_object, &config,
                          &generation, &walk_sid, &PyTuple_Type, &groups, &end_lexeme, &lexer_start, &tables,
                          &fill_rows, &trie_object))
        return nullptr;
    auto* cache = static_cast<GroupWalks*>(PyCapsule_GetPointer(walks_capsule, kGroupWalks));
    auto* edges = static_cast<ParserEdges*>(PyCapsule_GetPointer(edges_capsule, kParserEdges));
    if (cache == nullptr || edges == nullptr) return nullptr;
    Trie trie;
    View ids, mask;
    if (!trie.take(trie_object) || !ids.get(ids_object, "ids", 8)) return nullptr;
    if (PyObject_GetBuffer(mask_object, &mask.buffer, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) != 0) return nullptr;
    mask.held = true;
    if (mask.buffer.itemsize != 1) {
        PyErr_SetString(PyExc_TypeError, "settle: mask must be a bool array");
        return nullptr;
    }
    if (ids.count() != trie.first_token[trie.num_nodes]) {
        PyErr_SetString(PyExc_ValueError, "settle: one id per row of the trie expected");
        return nullptr;
    }
    cache->make_room();
    std::vector<int32_t> top;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(groups); ++i) {
        int before, position;
        PyObject* nodes_object;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(groups, i), "iiO", &before, &position, &nodes_object)) return nullptr;
        const GroupName name{-1 - generation, walk_sid, before, position};
        auto found = cache->ids.find(name);
        if (found != cache->ids.end()) {
            top.push_back(found->second);
            continue;
        }
        View nodes;
        if (!nodes.get(nodes_object, "nodes", 8)) return nullptr;
        std::vector<int64_t> members(nodes.data<int64_t>(), nodes.data<int64_t>() + nodes.count());
        for (int64_t node : members)
            if (node <= 0 || node >= trie.num_nodes) {
                PyErr_SetString(PyExc_IndexError, "settle: a trie node out of range (or the root)");
                return nullptr;
            }
        top.push_back(cache->intern(name, before, members));
    }
    Settling settling{*cache,       *edges,      trie, end_lexeme, lexer_start, tables, fill_rows,
                      static_cast<uint8_t*>(mask.buffer.buf), mask.count(), ids.data<int64_t>()};
    for (int32_t id : top)
        if (!settling.settle(config, id)) return nullptr;
    Py_RETURN_NONE;
}

PyMethodDef methods[] = {
    {"build_trie", build_trie, METH_VARARGS, "The byte trie of the token rows (see grammars.masking.token_walk)."},
    {"walk_nodes", walk_nodes, METH_VARARGS,
     "Walk trie subtrees through the lazy lexer DFA (see grammars.masking.token_walk)."},
    {"walk_vocabulary", walk_vocabulary, METH_VARARGS, "walk_nodes with the inside tokens as ids or a mask of them."},
    {"new_group_walks", new_group_walks, METH_VARARGS, "An empty per-vocabulary cache of boundary group walks."},
    {"new_parser_edges", new_parser_edges, METH_NOARGS, "An empty per-automaton memo of end_lexeme and lexer_start."},
    {"group_walks_held", group_walks_held, METH_O, "(walks, bytes) a group walk cache holds."},
    {"settle", settle, METH_VARARGS, "Set the tokens of boundary groups the grammar accepts (see grammars.masking.settle)."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_walk", "Compiled vocabulary walks over the lexer DFA.", -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__walk() { return PyModule_Create(&module); }
