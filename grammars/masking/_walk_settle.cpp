// Settling boundary groups (`grammars.masking.settle`): the tokens of a group end a lexeme, the
// parser takes the lexeme (`end_lexeme`), the next lexeme starts (`lexer_start`) and the group's
// subtrees are walked on from there, their own boundaries settled in turn, down to the tokens' ends.
// Both run here on the parser's steps, memoized per automaton (`ParserEdges`: Python is asked only
// on a miss); the walks of groups depend on lexer states alone, so they are kept per vocabulary
// (`GroupWalks`) and shared by every grammar. Accepted tokens are set in the mask's bits directly.
#include "_walk.h"

#include <memory>

namespace stencil_walk {

namespace {

constexpr int32_t kNoConfig = -1;  // end_lexeme's None: the lexeme cannot end there

// A group's name: (parent, start, before, position). A group of a whole-vocabulary walk has parent
// -1 - lexer generation, start the state whose walk found its members (StateWalk.inside_of) and
// before its state in that walk (StateWalk.origins); a nested group its parent's id and the start
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
    int32_t before;  // as named: where a nested group ends its lexeme (a top-level one, as its caller says)
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

// What may end in one lexer state: an ignored terminal, and the parser's lexemes.
struct Endings {
    bool ignored = false;
    std::vector<int32_t> lexemes;
};

struct LexemesHash {
    size_t operator()(const std::vector<int32_t>& lexemes) const {
        uint64_t h = lexemes.size();
        for (int32_t lexeme : lexemes) h = (h ^ static_cast<uint32_t>(lexeme)) * 0x100000001B3ull;
        return static_cast<size_t>(h);
    }
};

// Per automaton: end_lexeme by (config, lexer state), lexer_start by config, what ends in each lexer
// state, and the lexeme start of each set of allowed lexemes (many configurations allow the same).
struct ParserEdges {
    std::unordered_map<uint64_t, int32_t> ended;
    std::unordered_map<int32_t, int32_t> starts;
    std::unordered_map<int32_t, Endings> endings;
    std::unordered_map<std::vector<int32_t>, int32_t, LexemesHash> start_of_lexemes;
};

constexpr const char* kGroupWalks = "grammars.masking._walk.GroupWalks";
constexpr const char* kSettler = "grammars.masking._walk.Settler";

template <typename T>
void destroy_capsule(PyObject* capsule) {
    delete static_cast<T*>(PyCapsule_GetPointer(capsule, PyCapsule_GetName(capsule)));
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

// The ints of a tuple or list result (false with an error set where it holds something else).
bool ints_of(PyObject* sequence, const char* what, std::vector<int32_t>& out) {
    PyObject* fast = PySequence_Fast(sequence, what);
    if (fast == nullptr) return false;
    const Py_ssize_t count = PySequence_Fast_GET_SIZE(fast);
    out.resize(static_cast<size_t>(count));
    for (Py_ssize_t i = 0; i < count; ++i) {
        const long value = PyLong_AsLong(PySequence_Fast_GET_ITEM(fast, i));
        if (value == -1 && PyErr_Occurred()) {
            Py_DECREF(fast);
            return false;
        }
        out[static_cast<size_t>(i)] = static_cast<int32_t>(value);
    }
    Py_DECREF(fast);
    return true;
}

// The automaton's end_lexeme and lexer_start, run here (`grammars.core.automaton`): the parser's
// steps (`Parser.steps`: the compiled configurations' own methods) are called directly, and Python
// is asked only what ends in a lexer state new to the automaton (`endings_of`) and the lexeme start
// of a set of allowed lexemes new to it (`lexer_start`).
struct ParserSteps {
    PyObject *endings_of, *advance, *join, *allowed, *lexer_start;
};

struct Settling {
    GroupWalks& cache;
    ParserEdges& edges;
    const Trie& trie;
    ParserSteps steps;
    PyObject *tables, *fill;
    PyObject* make_filler;  // () -> a filler capsule for one group walk, or None (no filler)
    uint64_t* bits;  // the mask: token t is bit t % 64 of word t / 64
    Py_ssize_t size;  // tokens the words hold
    const int64_t* ordered_ids;  // the token id at each position of the trie's order
    Loops& loops;  // shared by the group walks of this settle

    const Endings* endings(int32_t sid) {
        auto found = edges.endings.find(sid);
        if (found != edges.endings.end()) return &found->second;
        PyObject* result = PyObject_CallFunction(steps.endings_of, "i", sid);
        if (result == nullptr) return nullptr;
        Endings value;
        PyObject* ignored = PyTuple_Check(result) && PyTuple_GET_SIZE(result) == 2 ? PyTuple_GET_ITEM(result, 0) : nullptr;
        const int truth = ignored == nullptr ? -1 : PyObject_IsTrue(ignored);
        const bool ok = truth >= 0 && ints_of(PyTuple_GET_ITEM(result, 1), "endings_of: lexemes", value.lexemes);
        Py_DECREF(result);
        if (!ok) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "settle: endings_of must return (bool, lexemes)");
            return nullptr;
        }
        value.ignored = truth == 1;
        return &edges.endings.emplace(sid, std::move(value)).first->second;
    }

    // GrammarAutomaton.end_lexeme: every terminal that may end in `before`, the results joined.
    bool ended(int32_t config, int32_t before, int32_t& out) {
        const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(config)) << 32) | static_cast<uint32_t>(before);
        auto found = edges.ended.find(key);
        if (found != edges.ended.end()) {
            out = found->second;
            return true;
        }
        const Endings* ending = endings(before);
        if (ending == nullptr) return false;
        std::vector<int32_t> results;
        if (ending->ignored) results.push_back(config);
        for (int32_t lexeme : ending->lexemes) {
            int32_t advanced;
            if (!int_result(PyObject_CallFunction(steps.advance, "ii", config, lexeme), true, "advance", advanced))
                return false;
            if (advanced != kNoConfig) results.push_back(advanced);
        }
        std::sort(results.begin(), results.end());
        results.erase(std::unique(results.begin(), results.end()), results.end());
        out = results.empty() ? kNoConfig : results[0];
        if (results.size() > 1) {
            PyObject* configs = PyList_New(static_cast<Py_ssize_t>(results.size()));
            if (configs == nullptr) return false;
            for (size_t i = 0; i < results.size(); ++i) PyList_SET_ITEM(configs, i, PyLong_FromLong(results[i]));
            PyObject* joined = PyObject_CallOneArg(steps.join, configs);
            Py_DECREF(configs);
            if (!int_result(joined, false, "join", out)) return false;
        }
        edges.ended.emplace(key, out);
        return true;
    }

    // GrammarAutomaton.lexer_start: one lexeme start per set of allowed lexemes.
    bool start(int32_t config, int32_t& out) {
        auto found = edges.starts.find(config);
        if (found != edges.starts.end()) {
            out = found->second;
            return true;
        }
        PyObject* allowed = PyObject_CallFunction(steps.allowed, "i", config);
        if (allowed == nullptr) return false;
        std::vector<int32_t> lexemes;
        const bool ok = ints_of(allowed, "allowed_lexemes", lexemes);
        Py_DECREF(allowed);
        if (!ok) return false;
        auto known = edges.start_of_lexemes.find(lexemes);
        if (known != edges.start_of_lexemes.end()) {
            out = known->second;
        } else {
            if (!int_result(PyObject_CallFunction(steps.lexer_start, "i", config), false, "lexer_start", out)) return false;
            edges.start_of_lexemes.emplace(std::move(lexemes), out);
        }
        edges.starts.emplace(config, out);
        return true;
    }

    // The walk of group `id`'s members from lexer state `from` (walked and kept on a miss).
    const GroupWalk* walk(int32_t id, int32_t from) {
        const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(id)) << 32) | static_cast<uint32_t>(from);
        auto found = cache.walks.find(key);
        if (found != cache.walks.end()) return &found->second;
        Walk walk{trie, loops, {}, {}, {}};
        // A filler per walk: the settle's Python calls between walks may grow the tables it would write.
        PyObject* filler = make_filler == Py_None ? Py_NewRef(Py_None) : PyObject_CallNoArgs(make_filler);
        if (filler == nullptr || !filler_of(filler, walk.filler)) {
            Py_XDECREF(filler);
            return nullptr;
        }
        for (int64_t node : cache.groups[id].members) walk.parked.push_back({node, from});
        const bool walked = walk.finish(tables, fill);
        Py_DECREF(filler);
        if (!walked) return nullptr;
        GroupWalk result;
        result.inside = std::move(walk.inside);
        walk.boundaries.each([&](int32_t before, int32_t position, const std::vector<int64_t>& nodes) {
            result.nested.push_back(cache.intern({id, from, before, position}, before, nodes));
        });
        cache.bytes += static_cast<int64_t>(result.inside.ranges.size() * sizeof(result.inside.ranges[0]) +
                                            result.nested.size() * sizeof(int32_t) + sizeof(GroupWalk));
        return &cache.walks.emplace(key, std::move(result)).first->second;
    }

    // Sets the tokens of group `id` (ending a lexeme in lexer state `before` after `config`) that the
    // grammar accepts. A fresh lexeme consumes a byte before it can end, so nested groups lie further
    // in the tokens and the recursion ends within the longest token.
    bool settle(int32_t config, int32_t id, int32_t before) {
        int32_t after, from;
        if (!ended(config, before, after)) return false;
        if (after == kNoConfig) return true;
        if (!start(after, from)) return false;
        if (from == kDead) return true;  // no lexeme may come (the text's end): every token dies at once
        const GroupWalk* walked = walk(id, from);  // node-based map: stays valid while nested walks are added
        if (walked == nullptr) return false;
        bool in_range = true;
        walked->inside.each_row(ordered_ids, [&](int64_t token) {
            if (token < 0 || token >= size)
                in_range = false;
            else
                bits[token >> 6] |= 1ull << (token & 63);
        });
        if (!in_range) {
            PyErr_SetString(PyExc_IndexError, "settle: a token id past the mask's bits");
            return false;
        }
        for (int32_t nested : walked->nested)
            if (!settle(after, nested, cache.groups[nested].before)) return false;
        return true;
    }
};

// One settler's arguments that stay from settle to settle (`new_settler`: taking the trie's buffers
// per call was a third of a small settle) and its memo of the parser's answers.
struct Settler {
    PyObject* group_walks = nullptr;  // the vocabulary's GroupWalks capsule (held)
    PyObject* tables = nullptr;  // LexerTables.tables (held)
    GroupWalks* cache = nullptr;
    ParserEdges edges;
    Trie trie;  // its views hold the trie's arrays
    View ordered_ids;
    ~Settler() {
        Py_XDECREF(group_walks);
        Py_XDECREF(tables);
    }
};

}  // namespace

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

// new_settler(group_walks, ordered_ids, tables, trie) -> a capsule holding a Settler: the vocabulary's
//   group walks (a new_group_walks capsule), the int64 token id at each position of the trie's order
//   (`TokenTrie.ordered_ids`), the lexer's `tables` and the trie as walk_nodes takes them, with an
//   empty memo of the automaton's parser answers (one per automaton).
PyObject* new_settler(PyObject*, PyObject* args) {
    PyObject *walks_capsule, *ids_object, *tables, *trie_object;
    if (!PyArg_ParseTuple(args, "OOOO", &walks_capsule, &ids_object, &tables, &trie_object)) return nullptr;
    auto held = std::make_unique<Settler>();
    held->cache = static_cast<GroupWalks*>(PyCapsule_GetPointer(walks_capsule, kGroupWalks));
    if (held->cache == nullptr || !held->trie.take(trie_object) ||
        !held->ordered_ids.get(ids_object, "ordered_ids", 8))
        return nullptr;
    if (held->ordered_ids.count() != held->trie.first_token[held->trie.num_nodes]) {
        PyErr_SetString(PyExc_ValueError, "new_settler: one id per position of the trie's order expected");
        return nullptr;
    }
    Py_INCREF(walks_capsule);
    held->group_walks = walks_capsule;
    Py_INCREF(tables);
    held->tables = tables;
    PyObject* capsule = PyCapsule_New(held.get(), kSettler, destroy_capsule<Settler>);
    if (capsule != nullptr) held.release();
    return capsule;
}

// group_walks_held(capsule) -> (walks, bytes): what a GroupWalks holds.
PyObject* group_walks_held(PyObject*, PyObject* capsule) {
    auto* cache = static_cast<GroupWalks*>(PyCapsule_GetPointer(capsule, kGroupWalks));
    if (cache == nullptr) return nullptr;
    return Py_BuildValue("(nn)", static_cast<Py_ssize_t>(cache->walks.size()), static_cast<Py_ssize_t>(cache->bytes));
}

// settle(settler, inside_bits, eos_ids, may_end, config, walk_name, groups, origins, steps, fill, make_filler)
//     -> (hash, packed): a new mask assembled, as bits_identity gives it (token t is bit t % 64 of
//   word t / 64): the walk's `inside_bits` (uint64 words), the tokens of its boundary `groups` that the
//   grammar accepts, and the `eos_ids` (a tuple of ints) set where `may_end`, cleared elsewhere.
//   settler: a new_settler capsule (of the automaton);
//   walk_name: (lexer generation, state whose walk found the members) of the whole-vocabulary walk whose
//     boundary `groups` ([(before, position, nodes as int64)], as walk_vocabulary returns them) end
//     lexemes after `config`; origins: each group's before state in the walk that found it (its name).
//   steps: (endings_of(sid) -> (ignored: bool, lexemes), advance(config, lexeme) -> int | None,
//     join(configs) -> int, allowed_lexemes(config) -> lexemes, lexer_start(config) -> int): the
//     automaton's and its parser's, asked on a miss (`ParserSteps`).
//   fill: as walk_nodes; make_filler: () -> a filler as walk_nodes takes, made for each group walk (the
//     caller holds the lexer's lock), or None.
// One call from the walk's bits to the mask's identity: copying, setting EOS and hashing apart took
// as long from Python as the settle.
PyObject* settle(PyObject*, PyObject* args) {
    PyObject *settler_capsule, *inside_object, *eos_ids, *groups, *origins, *fill, *make_filler;
    ParserSteps steps;
    int may_end, config;
    long long generation, walk_sid;
    if (!PyArg_ParseTuple(args, "OOO!pi(LL)O!O!(OOOOO)OO", &settler_capsule, &inside_object, &PyTuple_Type, &eos_ids,
                          &may_end, &config, &generation, &walk_sid, &PyTuple_Type, &groups, &PyTuple_Type, &origins,
                          &steps.endings_of, &steps.advance, &steps.join, &steps.allowed, &steps.lexer_start,
                          &fill, &make_filler))
        return nullptr;
    if (PyTuple_GET_SIZE(origins) != PyTuple_GET_SIZE(groups)) {
        PyErr_SetString(PyExc_ValueError, "settle: one origin per group expected");
        return nullptr;
    }
    auto* settler = static_cast<Settler*>(PyCapsule_GetPointer(settler_capsule, kSettler));
    if (settler == nullptr) return nullptr;
    View inside;
    if (!inside.get(inside_object, "settle: inside_bits", 8)) return nullptr;
    const Trie& trie = settler->trie;
    GroupWalks& cache = *settler->cache;
    cache.make_room();
    std::vector<std::pair<int32_t, int32_t>> top;  // (group, before)
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(groups); ++i) {
        int before, position;
        PyObject* nodes_object;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(groups, i), "iiO", &before, &position, &nodes_object)) return nullptr;
        const long origin = PyLong_AsLong(PyTuple_GET_ITEM(origins, i));
        if (origin == -1 && PyErr_Occurred()) return nullptr;
        const GroupName name{-1 - generation, walk_sid, origin, position};
        auto found = cache.ids.find(name);
        if (found != cache.ids.end()) {
            top.emplace_back(found->second, before);
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
        top.emplace_back(cache.intern(name, static_cast<int32_t>(origin), members), before);
    }
    PyObject* packed = PyBytes_FromStringAndSize(nullptr, inside.buffer.len);
    if (packed == nullptr) return nullptr;
    auto* bits = reinterpret_cast<uint64_t*>(PyBytes_AS_STRING(packed));
    std::memcpy(bits, inside.buffer.buf, static_cast<size_t>(inside.buffer.len));
    const Py_ssize_t size = inside.count() * 64;
    {
        LoopsLease lease;
        Settling settling{cache, settler->edges, trie, steps, settler->tables, fill, make_filler, bits, size,
                          settler->ordered_ids.data<int64_t>(), lease.loops()};
        for (const auto& [id, before] : top)
            if (!settling.settle(config, id, before)) {
                Py_DECREF(packed);
                return nullptr;
            }
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(eos_ids); ++i) {
        const long long token = PyLong_AsLongLong(PyTuple_GET_ITEM(eos_ids, i));
        if (token < 0 || token >= size) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_IndexError, "settle: an EOS id past the mask's bits");
            Py_DECREF(packed);
            return nullptr;
        }
        const uint64_t flag = 1ull << (token & 63);
        bits[token >> 6] = may_end ? bits[token >> 6] | flag : bits[token >> 6] & ~flag;
    }
    return identity_of(packed);
}

}  // namespace stencil_walk
