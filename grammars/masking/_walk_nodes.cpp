// The compiled vocabulary walk of `grammars.masking.token_walk` (`Walk`, walk_nodes, walk_vocabulary):
// the vocabulary as a byte trie, walked through the lexer DFA node by node. Tokens that share a
// prefix share its transitions, and a byte the lexer cannot take drops the whole subtree below it at
// once: a boundary group is a handful of subtrees (every token ` x...` after a space, say), not
// thousands of tokens, and walking it from the next lexeme's start touches only the subtrees whose
// first byte that lexeme can take. Its results are those of the numpy row walk there
// (`advance_rows_reference`) once each subtree is read as the tokens in it.
//
// The lexer DFA is lazy: a state's transition on a byte may not be known yet. Given a filler
// (`_lexer_filler.h`), the walk has the compiled derivatives write it at once, with its derivative
// class (a row whole only where the walk decides its loops), and goes on. Without one, or where it
// cannot, the walk parks the node, asks Python (`fill`) to compute the missing transitions, takes a
// fresh view of the tables (they may have been reallocated) and resumes the parked nodes where they
// stopped. A transition not known yet is DEAD in `trans` (the tables are zero-filled), so `has_row`
// and `has_entry` are read only where a transition is DEAD, off the loop's load-to-load dependency chain.
#include "_walk.h"

namespace stencil_walk {

thread_local Loops LoopsLease::shared_;
thread_local bool LoopsLease::in_use_ = false;

bool Walk::finish(PyObject* tables, PyObject* fill) {
    std::vector<Parked> work;
    Missing missing;
    std::vector<int32_t> state_at;  // by depth: the state after the current node's prefix
    while (!parked.empty()) {
        Tables t;
        if (!t.take(tables)) return false;
        work.swap(parked);
        parked.clear();
        loops.forget_undecided();  // rows were filled: decide again
        missing.clear();
        for (const Parked& item : work) {
            scan(t, item, state_at, missing);
            if (failed) return false;
        }
        t.release();
        if (!missing.empty()) {
            filler = nullptr;  // Python fills the rest: it may grow the tables the filler writes
            if (!ask(fill, missing)) return false;
        }
    }
    return true;
}

int32_t Walk::fill_entry(int32_t state, uint8_t byte) {
    if (filler == nullptr) return stencil_lexer::kCannot;
    const int32_t next = filler->fill_entry(filler->context, state, byte);
    failed = next == stencil_lexer::kFailed;
    return next;
}

int32_t Walk::on_text(const Tables& t, int32_t state) {
    int32_t text = loops.on_text(t, state);
    while (text >= 0 && filler != nullptr) {
        const int32_t filled = filler->fill_row(filler->context, text);
        if (filled < 0) {
            failed = filled == stencil_lexer::kFailed;
            break;
        }
        const int32_t before = text;
        text = loops.on_text(t, state, /*again=*/true);
        if (text == before) break;  // not written after all: parked, for Python to fill
    }
    return text;
}

void Walk::scan(const Tables& t, const Parked& item, std::vector<int32_t>& state_at, Missing& missing) {
    // The arrays read per node, in locals: the vectors this loop appends to could alias the structs'
    // pointers, which were otherwise reloaded from memory at every node.
    const uint8_t* const node_byte = trie.byte;
    const int32_t* const node_end = trie.end;
    const int32_t* const node_depth = trie.depth;
    const int32_t* const first_token = trie.first_token;
    const uint8_t* const text_below = trie.text_below;
    const int32_t* const next_of = t.next_of;
    const int64_t num_states = t.num_states;
    if (static_cast<int64_t>(loops.plain.size()) < num_states) loops.plain.resize(num_states, -1);
    const int64_t stop = node_end[item.node];
    const int32_t base = node_depth[item.node];
    if (static_cast<int32_t>(state_at.size()) <= base) state_at.resize(base + 1);
    int32_t* states = state_at.data();
    int32_t capacity = static_cast<int32_t>(state_at.size());
    states[base - 1] = item.state;
    // The inside range being extended, added to `inside` where a dropped subtree breaks it.
    int32_t open_from = 0, open_to = 0;
    const auto add_inside = [&](int32_t from, int32_t to) {
        if (from != open_to) {
            inside.add(open_from, open_to);
            open_from = from;
        }
        open_to = to;
    };
    for (int64_t node = item.node; node < stop;) {
        const int32_t depth = node_depth[node];
        const int32_t state = states[depth - 1];
        const uint8_t byte = node_byte[node];
        int32_t next = state < num_states ? next_of[static_cast<int64_t>(state) * 256 + byte] : kDead;
        const int32_t end = node_end[node];
        if (next == kDead) {
            if (!t.has_successor(state, byte) && (next = fill_entry(state, byte)) < 0) {
                if (failed) return;
                parked.push_back({node, state});
                missing.ask_entry(static_cast<int64_t>(state) * 256 + byte);
                node = end;
                continue;
            }
            if (next == kDead) {
                if (t.accepts[state]) boundaries.add(state, depth - 1, node);
                node = end;
                continue;
            }
        }
        // Decided for leaves too: one read of `plain` instead of a branch on the children, which
        // half the nodes have.
        int8_t plain = next < num_states ? loops.plain[next] : 0;
        if (plain < 0) plain = loops.on_plain(t, next, filler != nullptr);
        const bool plain_loop = (end > node + 1) & (plain == 1);  // implied by a text loop
        if (plain_loop) {
            const uint8_t below = text_below[node];
            const int32_t text = below & kTextBelow ? on_text(t, next) : Loops::kNoLoop;
            if (text >= 0) {  // undecided until the row of `text` is known
                if (failed) return;
                parked.push_back({node, state});
                missing.rows.push_back(text);
                node = end;
                continue;
            }
            if (text == Loops::kLoops || below & kPlainBelow) {  // the whole subtree stays inside
                add_inside(first_token[node], first_token[end]);
                node = end;
                continue;
            }
        }
        add_inside(first_token[node], first_token[node + 1]);
        if (capacity <= depth) {
            state_at.resize(depth + 1);
            states = state_at.data();
            capacity = depth + 1;
        }
        states[depth] = next;
        ++node;
    }
    inside.add(open_from, open_to);
}

namespace {

// `values` sorted and deduplicated, as a new list of ints (nullptr: an error is set).
template <typename T>
PyObject* sorted_list(std::vector<T>& values) {
    std::sort(values.begin(), values.end());
    values.erase(std::unique(values.begin(), values.end()), values.end());
    PyObject* list = PyList_New(static_cast<Py_ssize_t>(values.size()));
    if (list == nullptr) return nullptr;
    for (size_t i = 0; i < values.size(); ++i) {
        PyObject* value = PyLong_FromLongLong(values[i]);
        if (value == nullptr) {
            Py_DECREF(list);
            return nullptr;
        }
        PyList_SET_ITEM(list, i, value);
    }
    return list;
}

}  // namespace

bool filler_of(PyObject* object, const stencil_lexer::LexerFiller*& filler) {
    if (object == Py_None) {
        filler = nullptr;
        return true;
    }
    void* pointer = PyCapsule_GetPointer(object, stencil_lexer::kFillerCapsule);
    filler = static_cast<const stencil_lexer::LexerFiller*>(pointer);
    return filler != nullptr;
}

bool Walk::ask(PyObject* fill, Missing& missing) {
    PyObject* rows = sorted_list(missing.rows);
    PyObject* entries = rows == nullptr ? nullptr : sorted_list(missing.entries);
    PyObject* result = entries == nullptr ? nullptr : PyObject_CallFunctionObjArgs(fill, rows, entries, nullptr);
    Py_XDECREF(rows);
    Py_XDECREF(entries);
    if (result == nullptr) return false;
    Py_DECREF(result);
    return true;
}

namespace {

// Parks the trie `nodes` (int64, not the root) at lexer state `sid` to start a walk (false: an error is
// set). With `live`, only those whose byte leads `sid` to a live state: a token whose first byte ends the
// lexeme is the caller's to settle (`GroupSettler.ending_group`). The row of `sid` is written first then,
// by the filler where it can, else by `fill`.
bool start(Walk& walk, PyObject* nodes_object, int sid, PyObject* tables = nullptr, PyObject* fill = nullptr) {
    View nodes;
    if (!nodes.get(nodes_object, "nodes", 8)) return false;
    Tables t;
    const bool live = tables != nullptr;
    if (live) {
        if (!t.take(tables)) return false;
        if (sid < 0 || sid >= t.num_states) {
            PyErr_SetString(PyExc_IndexError, "walk: a lexer state out of range");
            return false;
        }
        if (!t.known[sid]) {
            const stencil_lexer::LexerFiller* filler = walk.filler;
            const int32_t filled = filler == nullptr ? stencil_lexer::kCannot : filler->fill_row(filler->context, sid);
            if (filled == stencil_lexer::kFailed) return false;
            if (filled == stencil_lexer::kCannot) {
                t.release();
                walk.filler = nullptr;  // as in `Walk::finish`
                Missing row;
                row.rows.push_back(sid);
                if (!Walk::ask(fill, row) || !t.take(tables)) return false;
            }
        }
    }
    walk.parked.reserve(static_cast<size_t>(nodes.count()));
    for (Py_ssize_t i = 0; i < nodes.count(); ++i) {
        const int64_t node = nodes.data<int64_t>()[i];
        if (node <= 0 || node >= walk.trie.num_nodes) {
            PyErr_SetString(PyExc_IndexError, "walk: a trie node out of range (or the root)");
            return false;
        }
        if (!live || t.next_of[static_cast<int64_t>(sid) * 256 + walk.trie.byte[node]] != kDead)
            walk.parked.push_back({node, sid});
    }
    return true;
}

}  // namespace

// walk_nodes(tables, fill, filler, trie, nodes, sid)
//   tables(): (trans int32[states*256], has_row bool[states], has_entry uint64[states*4], accepting
//   bool[states]), consistent: `has_entry` marks the known transitions of a state without `has_row`.
//   fill(rows: list[int], entries: list[int]): computes the rows of states `rows` and the transitions
//   `entries` (state * 256 + byte) (may raise: the walk stops).
//   filler: a capsule of `Store.walk_filler` over the tables `tables()` gives, or None.
//   trie: what `build_trie` returned; nodes: int64 non-root nodes whose bytes are read from `sid`.
// Returns (inside rows as int64 bytes, [(before, position, nodes as int64 bytes)]): the rows of
// the nodes' subtrees still inside a lexeme after their last byte, and the subtrees whose byte at
// `position` (the node's depth - 1) ends the lexeme in state `before`, sorted by (before, position).
PyObject* walk_nodes(PyObject*, PyObject* args) {
    PyObject *tables, *fill, *filler, *trie_object, *nodes_object;
    int sid;
    if (!PyArg_ParseTuple(args, "OOOOOi", &tables, &fill, &filler, &trie_object, &nodes_object, &sid)) return nullptr;
    Trie trie;
    if (!trie.take(trie_object)) return nullptr;
    LoopsLease lease;
    Walk walk{trie, lease.loops(), {}, {}, {}};
    if (!filler_of(filler, walk.filler) || !start(walk, nodes_object, sid) || !walk.finish(tables, fill))
        return nullptr;
    return Py_BuildValue("(NN)", bytes_of(walk.inside.rows(trie.order)), walk.boundaries.to_list());
}

// walk_vocabulary(tables, fill, filler, trie, nodes, sid, ordered_ids, row_bits, size)
//   As walk_nodes from the root's children `nodes`, those whose byte leads `sid` to a live state (a
//   token whose first byte ends the lexeme is the caller's), with `sid`'s row written first; and with
//   the inside tokens as a token set (`ordered_ids`: the int64 id of each row in
//   trie order, ids[order], read in order along the inside ranges; `row_bits`: the ids in
//   `ordered_ids` as a set of bits, bit id % 64 of uint64 word id / 64, at most (size + 63) / 64
//   words): returns (the inside tokens as such a set of (size + 63) / 64 words in bytes,
//   groups). Where most rows are inside (a string's inside), the set starts as `row_bits` and the
//   few rows outside are cleared.
PyObject* walk_vocabulary(PyObject*, PyObject* args) {
    PyObject *tables, *fill, *filler, *trie_object, *nodes_object, *ids_object, *row_bits_object;
    int sid;
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "OOOOOiOOn", &tables, &fill, &filler, &trie_object, &nodes_object, &sid,
                          &ids_object, &row_bits_object, &size))
        return nullptr;
    Trie trie;
    View ids, row_bits;
    if (!trie.take(trie_object) || !ids.get(ids_object, "ordered_ids", 8) || !row_bits.get(row_bits_object, "row_bits", 8))
        return nullptr;
    const int64_t num_rows = trie.first_token[trie.num_nodes];
    const Py_ssize_t words = (size + 63) / 64;
    if (ids.count() != num_rows || row_bits.count() > words) {
        PyErr_SetString(PyExc_ValueError, "walk_vocabulary: one id per row of the trie, row bits of at most size ids");
        return nullptr;
    }
    const int64_t* ordered = ids.data<int64_t>();
    LoopsLease lease;
    Walk walk{trie, lease.loops(), {}, {}, {}};
    if (!filler_of(filler, walk.filler) || !start(walk, nodes_object, sid, tables, fill) || !walk.finish(tables, fill))
        return nullptr;
    PyObject* groups = walk.boundaries.to_list();
    if (groups == nullptr) return nullptr;
    PyObject* inside = PyBytes_FromStringAndSize(nullptr, words * 8);  // filled before anyone sees it
    if (inside == nullptr) {
        Py_DECREF(groups);
        return nullptr;
    }
    auto* bits = reinterpret_cast<uint64_t*>(PyBytes_AS_STRING(inside));
    bool in_range = true;
    const auto place = [&](int64_t id) {
        in_range &= id >= 0 && id < size;
        return in_range ? id : 0;
    };
    if (2 * walk.inside.count() > num_rows) {  // most rows inside: all set at once, the few outside cleared
        std::memcpy(bits, row_bits.data<uint64_t>(), static_cast<size_t>(row_bits.count()) * 8);
        std::memset(bits + row_bits.count(), 0, static_cast<size_t>(words - row_bits.count()) * 8);
        walk.inside.each_gap(static_cast<int32_t>(num_rows), [&](int32_t at) {
            const int64_t id = place(ordered[at]);
            bits[id >> 6] &= ~(1ull << (id & 63));
        });
    } else {
        std::memset(bits, 0, static_cast<size_t>(words) * 8);
        walk.inside.each_row(ordered, [&](int64_t token) {
            const int64_t id = place(token);
            bits[id >> 6] |= 1ull << (id & 63);
        });
    }
    if (!in_range) {
        PyErr_SetString(PyExc_IndexError, "walk_vocabulary: a token id past size");
        Py_DECREF(inside);
        Py_DECREF(groups);
        return nullptr;
    }
    return Py_BuildValue("(NN)", inside, groups);
}

}  // namespace stencil_walk
