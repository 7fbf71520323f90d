// Compiled Brzozowski derivatives of byte-regex terms, for the rows of the lazy lexer DFA
// (`grammars.core.lexer`). A `Store` is a hash-consing table of terms mirroring `byte_regex`: the same
// kinds, the same normalizing constructors and derivative rules, so a term derived here and carried
// back to Python (`describe`, then `byte_regex._intern`) is the very term `byte_regex.derivative`
// builds. `byte_regex` stays the reference; this is the fast path of row filling, where the Python
// derivatives cost most of a lexer state's creation. It also answers what the lexer asks of a new
// state (`is_empty`, its accepting tags, `clamp_counters`), so a state's term need not be carried back,
// and numbers nodes as lexer states itself, entering new ones in the lexer's books (`state`, and `fill`
// for the rows of a batch of states, written to the lexer's tables), so a vocabulary walk's missing rows
// cost one call.
//
// A store mirrors one generation of byte_regex's hash-consing table. A term of an older generation
// (kept alive by a cache that outlived it) has a twin in the current one; such a term is carried here
// with its Python id as `origin`, so that it stays a node of its own exactly as it stays a term of its
// own in Python, and the terms carried back are the ones Python builds, twins included.
//
// Nodes are numbered densely in creation order; unions and intersections keep their members sorted by
// node number (the Python side sorts by its own ids when it carries a node back). Recursion follows the
// term's nesting (never a concatenation's spine, which is walked with loops) and is bounded by
// kMaxDepth: deeper terms raise RecursionError, as the Python derivatives do.
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <deque>
#include <map>
#include <string>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "_lexer_filler.h"

namespace {

// Term kinds: the values of byte_regex.K_*.
enum Kind : uint8_t { kEmpty, kEps, kBytes, kConcat, kAlt, kRepeat, kAnd, kNot, kTag };

constexpr int32_t kEmptyNode = 0, kEpsNode = 1;
constexpr int64_t kUnbounded = -1;  // a counter's `hi` of None
constexpr int kMaxDepth = 2000;  // derivative calls deep: about 1 MiB of stack
constexpr size_t kMaxEmptinessStates = 1000;  // byte_regex.MAX_EMPTINESS_STATES
constexpr size_t kMaxMemoEntries = 250000;  // each memo's bound, as byte_regex.MAX_INTERNED_TERMS (the lexer
                                            // compacts a store holding that many nodes, or twice what the
                                            // last compaction kept)

struct Bits {
    uint64_t w[4] = {0, 0, 0, 0};
    bool any() const { return (w[0] | w[1] | w[2] | w[3]) != 0; }
    bool operator==(const Bits& o) const { return std::memcmp(w, o.w, sizeof w) == 0; }
    Bits operator&(const Bits& o) const { return {{w[0] & o.w[0], w[1] & o.w[1], w[2] & o.w[2], w[3] & o.w[3]}}; }
    Bits operator|(const Bits& o) const { return {{w[0] | o.w[0], w[1] | o.w[1], w[2] | o.w[2], w[3] | o.w[3]}}; }
    Bits operator~() const { return {{~w[0], ~w[1], ~w[2], ~w[3]}}; }
    bool has(int byte) const { return (w[byte >> 6] >> (byte & 63)) & 1; }
    int lowest() const {
        for (int i = 0; i < 4; ++i)
            if (w[i]) return i * 64 + __builtin_ctzll(w[i]);
        return -1;
    }
};

const Bits kAllBytes{{~0ull, ~0ull, ~0ull, ~0ull}};

struct Node {
    Kind kind;
    bool nullable, plain;
    // `infinite`: a plain node whose language is surely infinite (`Store::infinite`). `inhabited`: surely
    // not empty, by structure (nullable, plain but EMPTY, or `Store::inhabited`); false says nothing.
    bool infinite, inhabited;
    int32_t partition = -1;  // the derivative classes, once computed
    uint32_t args_begin, args_len;
    int64_t lo, hi, tag;
    int64_t origin;  // 0, or the Python id of a term of an older generation of byte_regex's table
    Bits bits;
    // The bytes whose derivative is not EMPTY (`Store::first_bytes`): `derivative` answers EMPTY at once
    // for the others, so a union of a schema's keys derives the few members that begin with the byte.
    Bits first;
    // The largest counter bound (`lo`, or a finite `hi`) in the node and its subterms, and whether they
    // hold a composite term of an older generation (which rebuilding makes its current twin): `clamp`
    // to a limit at least `bound` leaves a node without such terms as it is, so most states skip
    // rebuilding their term.
    int64_t bound;
    bool holds_older;
};

// A memo from 64-bit keys to node or partition ids, by open addressing: the derivative memo is read
// for every class of every row, and std::unordered_map's modulo hashing and node per entry cost a
// twentieth of a cold token mask there. Emptied, not evicted, when full (the memos' bound).
class Memo {
   public:
    const int32_t* find(uint64_t key) const {
        if (keys_.empty()) return nullptr;
        for (size_t slot = index(key);; slot = (slot + 1) & mask_) {
            if (keys_[slot] == key) return &values_[slot];
            if (keys_[slot] == kFree) return nullptr;
        }
    }

    void put(uint64_t key, int32_t value) {
        if (size_ >= kMaxMemoEntries) clear();
        if (2 * (size_ + 1) > keys_.size()) grow();
        size_t slot = index(key);
        while (keys_[slot] != kFree && keys_[slot] != key) slot = (slot + 1) & mask_;
        size_ += keys_[slot] == kFree;
        keys_[slot] = key;
        values_[slot] = value;
    }

   private:
    static constexpr uint64_t kFree = ~0ull;  // no key: node and partition ids are below 2^31

    // Fibonacci hashing: the product's top bits, which every bit of the key reaches (on a table with slots:
    // shift_ < 64).
    size_t index(uint64_t key) const { return static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> shift_); }

    void clear() {
        std::vector<uint64_t>().swap(keys_);
        std::vector<int32_t>().swap(values_);
        size_ = 0;
        mask_ = 0;
        shift_ = 64;
    }

    void grow() {
        std::vector<uint64_t> keys(std::max<size_t>(1024, 2 * keys_.size()), kFree);
        std::vector<int32_t> values(keys.size());
        keys_.swap(keys);
        values_.swap(values);
        mask_ = keys_.size() - 1;
        shift_ = 64 - __builtin_ctzll(keys_.size());
        for (size_t i = 0; i < keys.size(); ++i) {
            if (keys[i] == kFree) continue;
            size_t slot = index(keys[i]);
            while (keys_[slot] != kFree) slot = (slot + 1) & mask_;
            keys_[slot] = keys[i];
            values_[slot] = values[i];
        }
    }

    std::vector<uint64_t> keys_;
    std::vector<int32_t> values_;
    size_t size_ = 0, mask_ = 0;
    int shift_ = 64;
};

struct TooDeep {};
struct PythonError {};  // a Python exception is set (from `check`)

class Store {
   public:
    Store() {
        intern(kEmpty, nullptr, 0, {}, 0, 0, 0);
        intern(kEps, nullptr, 0, {}, 0, 0, 0);
        any_byte_ = intern(kBytes, nullptr, 0, kAllBytes, 0, 0, 0);
        anything_ = repeat(any_byte_, 0, kUnbounded);
    }

    size_t size() const { return nodes_.size(); }
    const Node& node(int32_t id) const { return nodes_[id]; }

    // The node a byte_regex term (by id) was carried here as or read back from (nullptr: not known,
    // or forgotten with the memo, which carrying again finds by structure).
    const int32_t* carried(int64_t term_id) const { return carried_.find(static_cast<uint64_t>(term_id)); }
    void remember(int64_t term_id, int32_t node) {
        if (carried(term_id) == nullptr) carried_.put(static_cast<uint64_t>(term_id), node);
    }
    const int32_t* args(const Node& n) const { return args_.data() + n.args_begin; }

    // Interns a term already in normal form (as byte_regex builds it): only the members of unions
    // and intersections are put in this store's order.
    int32_t intern_normal(Kind kind, std::vector<int32_t> members, const Bits& bits, int64_t lo, int64_t hi,
                          int64_t tag, int64_t origin) {
        if (kind == kAlt || kind == kAnd) std::sort(members.begin(), members.end());
        return intern(kind, members.data(), members.size(), bits, lo, hi, tag, origin);
    }

    // ---- constructors (byte_regex's, rule for rule) ------------------------------------------
    int32_t byte_set(const Bits& bits) { return bits.any() ? intern(kBytes, nullptr, 0, bits, 0, 0, 0) : kEmptyNode; }

    int32_t concat2(int32_t a, int32_t b) {
        if (a == kEmptyNode || b == kEmptyNode) return kEmptyNode;
        if (a == kEpsNode) return b;
        if (b == kEpsNode) return a;
        if (nodes_[a].kind != kConcat) return pair(kConcat, a, b);
        std::vector<int32_t> heads;
        while (nodes_[a].kind == kConcat) {
            heads.push_back(args(nodes_[a])[0]);
            a = args(nodes_[a])[1];
        }
        int32_t result = concat2(a, b);
        for (auto head = heads.rbegin(); head != heads.rend(); ++head) result = pair(kConcat, *head, result);
        return result;
    }

    int32_t alt(const std::vector<int32_t>& terms) {
        std::vector<int32_t> members;
        Bits bits;
        for (int32_t term : terms) {
            const Node& n = nodes_[term];
            const int32_t* begin = n.kind == kAlt ? args(n) : &term;
            const uint32_t count = n.kind == kAlt ? n.args_len : 1;
            for (uint32_t i = 0; i < count; ++i) {
                const Node& m = nodes_[begin[i]];
                if (m.kind == kBytes)
                    bits = bits | m.bits;
                else if (begin[i] != kEmptyNode)
                    members.push_back(begin[i]);
            }
        }
        if (bits.any()) members.push_back(byte_set(bits));
        std::sort(members.begin(), members.end());
        members.erase(std::unique(members.begin(), members.end()), members.end());
        if (members.size() > 1) drop_subsumed_counters(members);
        if (members.empty()) return kEmptyNode;
        if (members.size() == 1) return members[0];
        return intern(kAlt, members.data(), members.size(), {}, 0, 0, 0);
    }

    int32_t repeat(int32_t term, int64_t lo, int64_t hi) {
        if (hi != kUnbounded && hi < lo) return kEmptyNode;
        if (nodes_[term].nullable) lo = 0;
        if (hi == 0 || term == kEpsNode) return kEpsNode;
        if (term == kEmptyNode) return lo == 0 ? kEpsNode : kEmptyNode;
        if (lo == 1 && hi == 1) return term;
        const Node& n = nodes_[term];
        if (n.kind == kRepeat && n.lo == 0 && n.hi == kUnbounded && lo == 0 && hi == kUnbounded) return term;
        return intern(kRepeat, &term, 1, {}, lo, hi, 0);
    }

    int32_t intersect(const std::vector<int32_t>& terms) {
        std::vector<int32_t> members;
        for (int32_t term : terms) {
            const Node& n = nodes_[term];
            const int32_t* begin = n.kind == kAnd ? args(n) : &term;
            const uint32_t count = n.kind == kAnd ? n.args_len : 1;
            for (uint32_t i = 0; i < count; ++i) {
                if (begin[i] == kEmptyNode) return kEmptyNode;
                if (begin[i] != anything_) members.push_back(begin[i]);
            }
        }
        std::sort(members.begin(), members.end());
        members.erase(std::unique(members.begin(), members.end()), members.end());
        if (members.empty()) return anything_;
        if (members.size() == 1) return members[0];
        return intern(kAnd, members.data(), members.size(), {}, 0, 0, 0);
    }

    int32_t complement(int32_t term) {
        if (nodes_[term].kind == kNot) return args(nodes_[term])[0];
        if (term == kEmptyNode) return anything_;
        if (term == anything_) return kEmptyNode;
        return intern(kNot, &term, 1, {}, 0, 0, 0);
    }

    int32_t tag(int64_t tag_id, int32_t term) {
        return term == kEmptyNode ? kEmptyNode : intern(kTag, &term, 1, {}, 0, 0, tag_id);
    }

    // ---- derivatives ------------------------------------------------------------------------
    int32_t derivative(int32_t term, int byte) {
        if (!nodes_[term].first.has(byte)) return kEmptyNode;
        const uint64_t key = static_cast<uint64_t>(term) << 8 | static_cast<uint64_t>(byte);
        if (const int32_t* found = derivatives_.find(key)) return *found;
        if (++depth_ > kMaxDepth) {
            depth_ = 0;
            throw TooDeep{};
        }
        const int32_t result = derive(term, byte);
        --depth_;
        derivatives_.put(key, result);
        return result;
    }

    // The partition of the bytes into classes with equal derivatives (byte_regex.derivative_classes).
    const std::vector<Bits>& classes(int32_t term) {
        if (nodes_[term].partition < 0) {
            std::vector<int32_t> pending{term};  // operands first, without recursion (deep spines)
            while (!pending.empty()) {
                const int32_t top = pending.back();
                const size_t before = pending.size();
                for (int32_t operand : class_operands(top))
                    if (nodes_[operand].partition < 0) pending.push_back(operand);
                if (pending.size() == before) {
                    pending.pop_back();
                    if (nodes_[top].partition < 0) nodes_[top].partition = own_classes(top);
                }
            }
        }
        return partitions_[nodes_[term].partition];
    }

    // byte_regex.is_empty: 1 empty, 0 not, -1 undecided within kMaxEmptinessStates.
    int is_empty(int32_t term, PyObject* check) {
        if (term == kEmptyNode) return 1;
        if (nodes_[term].inhabited) return 0;
        auto found = emptiness_.find(term);
        if (found != emptiness_.end()) return found->second;
        int result = 1;
        std::unordered_set<int32_t> seen{term};
        std::deque<int32_t> frontier{term};
        while (!frontier.empty() && result == 1) {
            call(check);
            const int32_t current = frontier.front();
            frontier.pop_front();
            const std::vector<Bits> parts = classes(current);  // a copy: deriving may add partitions
            for (const Bits& part : parts) {
                const int32_t next = derivative(current, part.lowest());
                if (next == kEmptyNode || seen.count(next)) continue;
                if (nodes_[next].inhabited) {
                    result = 0;
                    break;
                }
                if (seen.size() >= kMaxEmptinessStates) {
                    result = -1;
                    break;
                }
                seen.insert(next);
                frontier.push_back(next);
            }
        }
        if (emptiness_.size() >= kMaxMemoEntries) emptiness_.clear();
        emptiness_.emplace(term, result);
        return result;
    }

    // byte_regex.clamp_counters: every counter bounded beyond `limit` relaxed, in a plain term.
    int32_t clamp(int32_t term, int64_t limit) {
        const Node& root = nodes_[term];
        if (!root.plain || (root.bound <= limit && !root.holds_older)) return term;  // nothing to rebuild
        size_t clamped = 0;
        for (const auto& by_limit : clamped_) clamped += by_limit.second.size();
        if (clamped >= kMaxMemoEntries) clamped_.clear();
        std::unordered_map<int32_t, int32_t>& memo = clamped_[limit];
        std::vector<int32_t> pending{term};  // post-order without recursion: long literals are deep
        while (!pending.empty()) {
            const int32_t top = pending.back();
            if (memo.count(top)) {
                pending.pop_back();
                continue;
            }
            const Node n = nodes_[top];
            const bool has_args = n.kind == kConcat || n.kind == kAlt || n.kind == kTag || n.kind == kRepeat;
            const size_t before = pending.size();
            if (has_args)
                for (uint32_t i = 0; i < n.args_len; ++i)
                    if (!memo.count(args(n)[i])) pending.push_back(args(n)[i]);
            if (pending.size() != before) continue;
            pending.pop_back();
            std::vector<int32_t> clamped;
            for (uint32_t i = 0; has_args && i < n.args_len; ++i) clamped.push_back(memo.at(args(n)[i]));
            int32_t result = top;
            if (n.kind == kConcat) {
                result = concat2(clamped[0], concat2(clamped[1], kEpsNode));
            } else if (n.kind == kAlt) {
                result = alt(clamped);
            } else if (n.kind == kTag) {
                result = tag(n.tag, clamped[0]);
            } else if (n.kind == kRepeat) {
                const bool relaxed = n.hi != kUnbounded && n.hi > limit;
                result = repeat(clamped[0], relaxed || n.lo > limit ? std::min(n.lo, limit + 1) : n.lo,
                                relaxed ? kUnbounded : n.hi);
            }
            memo.emplace(top, result);
        }
        return memo.at(term);
    }

    // The tags of the members of a union of tagged terms whose rest accepts, sorted (byte_regex.tags_of).
    std::vector<int64_t> accepting_tags(int32_t term) const {
        const Node& n = nodes_[term];
        const int32_t* begin = n.kind == kAlt ? args(n) : &term;
        const uint32_t count = n.kind == kAlt ? n.args_len : 1;
        std::vector<int64_t> tags;
        for (uint32_t i = 0; i < count; ++i) {
            const Node& member = nodes_[begin[i]];
            if (member.kind == kTag && nodes_[args(member)[0]].nullable) tags.push_back(member.tag);
        }
        std::sort(tags.begin(), tags.end());
        return tags;
    }

    // A plain union of lexemes under distinct tags as its (lexeme, tag) pairs, ordered (lexer.tag_free_form):
    // false for any other term.
    bool tag_free_form(int32_t term, std::vector<std::pair<int32_t, int64_t>>& form) const {
        const Node& n = nodes_[term];
        if (!n.plain) return false;
        const int32_t* begin = n.kind == kAlt ? args(n) : &term;
        const uint32_t count = n.kind == kAlt ? n.args_len : 1;
        std::vector<int64_t> tags;
        for (uint32_t i = 0; i < count; ++i) {
            const Node& member = nodes_[begin[i]];
            if (member.kind != kTag) return false;
            form.emplace_back(args(member)[0], member.tag);
            tags.push_back(member.tag);
        }
        std::sort(tags.begin(), tags.end());
        if (std::adjacent_find(tags.begin(), tags.end()) != tags.end()) return false;
        std::sort(form.begin(), form.end());
        return true;
    }

    // The nodes of `source` (another store of the same generation of byte_regex's table) in this one,
    // their subterms carried with them: the node here of each of `roots`, and in `twins` the (source
    // node, node here) of each node carried that stands for a term of an older generation (an origin:
    // only its Python term names it). The lexer's compaction of a full store: the terms of its states
    // move without a round trip through Python terms.
    std::vector<int32_t> adopt(const Store& source, const std::vector<int32_t>& roots, std::vector<int32_t>& twins) {
        std::vector<int32_t> mapped(source.size(), -1), pending, members, adopted;
        adopted.reserve(roots.size());
        for (const int32_t root : roots) {
            pending.push_back(root);
            while (!pending.empty()) {  // post-order without recursion (deep spines)
                const int32_t top = pending.back();
                const Node& n = source.node(top);
                const int32_t* operands = source.args(n);
                const size_t waiting = pending.size();
                for (uint32_t i = 0; i < n.args_len; ++i)
                    if (mapped[operands[i]] < 0) pending.push_back(operands[i]);
                if (pending.size() > waiting) continue;
                pending.pop_back();
                if (mapped[top] >= 0) continue;
                members.clear();
                for (uint32_t i = 0; i < n.args_len; ++i) members.push_back(mapped[operands[i]]);
                mapped[top] = intern_normal(n.kind, members, n.bits, n.lo, n.hi, n.tag, n.origin);
                if (n.origin != 0) {
                    twins.insert(twins.end(), {top, mapped[top]});
                    remember(n.origin, mapped[top]);  // the term of an older generation it stands for
                }
            }
            adopted.push_back(mapped[root]);
        }
        return adopted;
    }

    // The union `term` with each member tagged `tags[i]` tagged `new_tags[i]` instead (lexer.retagged).
    int32_t retag(int32_t term, const std::vector<int64_t>& tags, const std::vector<int64_t>& new_tags) {
        const Node& n = nodes_[term];
        const std::vector<int32_t> members = n.kind == kAlt ? std::vector<int32_t>(args(n), args(n) + n.args_len)
                                                            : std::vector<int32_t>{term};
        std::vector<int32_t> renamed;
        for (int32_t member : members) {
            const Node& m = nodes_[member];
            const auto at = m.kind == kTag ? std::find(tags.begin(), tags.end(), m.tag) : tags.end();
            renamed.push_back(at == tags.end() ? member : tag(new_tags[at - tags.begin()], args(m)[0]));
        }
        return alt(renamed);
    }

    static void call(PyObject* check) {
        if (check == Py_None) return;
        PyObject* result = PyObject_CallNoArgs(check);
        if (result == nullptr) throw PythonError{};
        Py_DECREF(result);
    }

    int32_t anything() const { return anything_; }

   private:
    int32_t derive(int32_t term, int byte) {
        const Node& n = nodes_[term];
        switch (n.kind) {
            case kEmpty:
            case kEps:
                return kEmptyNode;
            case kBytes:
                return n.bits.has(byte) ? kEpsNode : kEmptyNode;
            case kAlt: {
                std::vector<int32_t> alive;
                const uint32_t begin = n.args_begin, count = n.args_len;  // derivatives may move `n` and the args
                for (uint32_t i = 0; i < count; ++i) {
                    const int32_t d = derivative(args_[begin + i], byte);
                    if (d != kEmptyNode) alive.push_back(d);
                }
                if (alive.size() > 1) return alt(alive);
                return alive.empty() ? kEmptyNode : alive[0];
            }
            case kRepeat: {
                const int32_t body = args(n)[0];
                const int64_t lo = n.lo, hi = n.hi;
                const int32_t remaining = repeat(body, lo > 0 ? lo - 1 : 0, hi == kUnbounded ? kUnbounded : hi - 1);
                return concat2(derivative(body, byte), remaining);
            }
            case kAnd: {
                std::vector<int32_t> parts;
                const std::vector<int32_t> members(args(n), args(n) + n.args_len);
                for (int32_t member : members) parts.push_back(derivative(member, byte));
                return intersect(parts);
            }
            case kNot:
                return complement(derivative(args(n)[0], byte));
            case kTag: {
                const int64_t tag_id = n.tag;
                return tag(tag_id, derivative(args(n)[0], byte));
            }
            case kConcat: {  // along the right spine with a loop: a run of nullable items is that deep
                std::vector<int32_t> branches;
                while (nodes_[term].kind == kConcat) {
                    const int32_t head = args(nodes_[term])[0], rest = args(nodes_[term])[1];
                    branches.push_back(concat2(derivative(head, byte), rest));
                    if (!nodes_[head].nullable) return alt(branches);
                    term = rest;
                }
                branches.push_back(derivative(term, byte));
                return alt(branches);
            }
        }
        return kEmptyNode;
    }

    // Of the members `x{lo,p}.y` and `x{lo,q}.y` (q >= p) keep only the widest, and of twins equally
    // wide the one `twin_rank` puts first (byte_regex's rule, whatever the order of the members).
    void drop_subsumed_counters(std::vector<int32_t>& members) {
        std::map<std::tuple<int32_t, int64_t, int32_t>, int32_t> widest;  // by (body, lo, rest)
        std::vector<int32_t> kept;
        bool dropped = false;
        for (int32_t term : members) {
            const Node& n = nodes_[term];
            const int32_t counter = n.kind == kConcat ? args(n)[0] : term;
            const int32_t rest = n.kind == kConcat ? args(n)[1] : kEpsNode;
            if (nodes_[counter].kind != kRepeat) {
                kept.push_back(term);
                continue;
            }
            auto placed = widest.try_emplace({args(nodes_[counter])[0], nodes_[counter].lo, rest}, term);
            if (!placed.second) {
                dropped = true;
                const int32_t other = placed.first->second;
                if (upper(other) < upper(term) || (upper(other) == upper(term) && twin_rank(term) < twin_rank(other)))
                    placed.first->second = term;
            }
        }
        if (!dropped) return;
        for (auto& entry : widest) kept.push_back(entry.second);
        std::sort(kept.begin(), kept.end());
        members.swap(kept);
    }

    // byte_regex's `_twin_rank`: the counter's age, then the member's (-1 for the current generation,
    // else the Python id of the term of an older one).
    std::pair<int64_t, int64_t> twin_rank(int32_t term) const {
        const Node& n = nodes_[term];
        const int32_t counter = n.kind == kConcat ? args(n)[0] : term;
        return {age(counter), age(term)};
    }

    int64_t age(int32_t term) const { return nodes_[term].origin == 0 ? -1 : nodes_[term].origin; }

    double upper(int32_t term) const {
        const Node& n = nodes_[term];
        const Node& counter = n.kind == kConcat ? nodes_[args(n)[0]] : n;
        return counter.hi == kUnbounded ? 1e300 : static_cast<double>(counter.hi);
    }

    std::vector<int32_t> class_operands(int32_t term) const {
        const Node& n = nodes_[term];
        switch (n.kind) {
            case kEmpty:
            case kEps:
            case kBytes:
                return {};
            case kConcat:
                return nodes_[args(n)[0]].nullable ? std::vector<int32_t>{args(n)[0], args(n)[1]}
                                                   : std::vector<int32_t>{args(n)[0]};
            case kAlt:
            case kAnd:
                return std::vector<int32_t>(args(n), args(n) + n.args_len);
            default:
                return {args(n)[0]};
        }
    }

    int32_t own_classes(int32_t term) {
        const Node& n = nodes_[term];
        switch (n.kind) {
            case kEmpty:
            case kEps:
                return partition_of({kAllBytes});
            case kBytes: {
                const Bits rest = kAllBytes & ~n.bits;
                return rest.any() ? partition_of({n.bits, rest}) : partition_of({n.bits});
            }
            case kConcat: {
                const int32_t head = args(n)[0], tail = args(n)[1];
                return nodes_[head].nullable ? meet(nodes_[head].partition, nodes_[tail].partition)
                                             : nodes_[head].partition;
            }
            case kAlt:
            case kAnd: {
                int32_t parts = partition_of({kAllBytes});
                for (uint32_t i = 0; i < n.args_len; ++i) parts = meet(parts, nodes_[args(n)[i]].partition);
                return parts;
            }
            default:
                return nodes_[args(n)[0]].partition;
        }
    }

    int32_t partition_of(const std::vector<Bits>& parts) {
        std::string key(reinterpret_cast<const char*>(parts.data()), parts.size() * sizeof(Bits));
        auto found = partition_ids_.find(key);
        if (found != partition_ids_.end()) return found->second;
        const int32_t id = static_cast<int32_t>(partitions_.size());
        partitions_.push_back(parts);
        partition_ids_.emplace(std::move(key), id);
        return id;
    }

    int32_t meet(int32_t p, int32_t q) {
        if (partitions_[p].size() == 1 || p == q) return q;
        if (partitions_[q].size() == 1) return p;
        const uint64_t key = static_cast<uint64_t>(p) << 32 | static_cast<uint32_t>(q);
        if (const int32_t* found = meets_.find(key)) return *found;
        std::vector<Bits> parts;
        for (const Bits& x : partitions_[p])
            for (const Bits& y : partitions_[q]) {
                const Bits both = x & y;
                if (both.any()) parts.push_back(both);
            }
        const int32_t id = partition_of(parts);
        meets_.put(key, id);
        return id;
    }

    int32_t pair(Kind kind, int32_t a, int32_t b) {
        const int32_t members[2] = {a, b};
        return intern(kind, members, 2, {}, 0, 0, 0);
    }

    // ---- hash-consing -----------------------------------------------------------------------
    static uint64_t mix(uint64_t h, uint64_t v) { return (h ^ v) * 0x100000001b3ull + (h >> 29); }

    static uint64_t hash_of(Kind kind, const int32_t* members, size_t count, const Bits& bits, int64_t lo, int64_t hi,
                            int64_t tag, int64_t origin) {
        uint64_t h = mix(0xcbf29ce484222325ull, kind);
        for (size_t i = 0; i < count; ++i) h = mix(h, static_cast<uint32_t>(members[i]));
        for (uint64_t word : bits.w) h = mix(h, word);
        h = mix(mix(mix(h, static_cast<uint64_t>(lo)), static_cast<uint64_t>(hi)), static_cast<uint64_t>(tag));
        h = mix(h, static_cast<uint64_t>(origin));
        return h ^ (h >> 31);
    }

    bool same(const Node& n, Kind kind, const int32_t* members, size_t count, const Bits& bits, int64_t lo, int64_t hi,
              int64_t tag, int64_t origin) const {
        return n.kind == kind && n.args_len == count && n.lo == lo && n.hi == hi && n.tag == tag &&
               n.origin == origin && n.bits == bits &&
               std::equal(members, members + count, args(n));
    }

    int32_t intern(Kind kind, const int32_t* members, size_t count, const Bits& bits, int64_t lo, int64_t hi,
                   int64_t tag, int64_t origin = 0) {
        if (2 * (nodes_.size() + 1) > slots_.size()) rehash();
        const uint64_t mask = slots_.size() - 1;
        uint64_t slot = hash_of(kind, members, count, bits, lo, hi, tag, origin) & mask;
        while (slots_[slot] >= 0) {
            if (same(nodes_[slots_[slot]], kind, members, count, bits, lo, hi, tag, origin)) return slots_[slot];
            slot = (slot + 1) & mask;
        }
        const int32_t id = static_cast<int32_t>(nodes_.size());
        Node n{kind, false, true, false, false, -1, static_cast<uint32_t>(args_.size()), static_cast<uint32_t>(count),
               lo,   hi,    tag,  origin, bits};
        n.bound = kind == kRepeat ? std::max(lo, hi == kUnbounded ? 0 : hi) : 0;
        n.holds_older = origin != 0 && count > 0;
        for (size_t i = 0; i < count; ++i) {
            n.bound = std::max(n.bound, nodes_[members[i]].bound);
            n.holds_older = n.holds_older || nodes_[members[i]].holds_older;
        }
        args_.insert(args_.end(), members, members + count);
        n.nullable = nullable(n);
        n.first = first_bytes(n);
        n.plain = kind != kAnd && kind != kNot;
        for (size_t i = 0; i < count && n.plain; ++i) n.plain = nodes_[members[i]].plain;
        n.infinite = n.plain && infinite(n);
        n.inhabited = n.nullable || (n.plain ? kind != kEmpty : inhabited(n));
        nodes_.push_back(n);
        slots_[slot] = id;
        return id;
    }

    // The bytes whose derivative `derive` may build as something other than EMPTY. Exact without a
    // complement inside: the constructors fold an EMPTY operand of a concatenation, intersection or tag
    // into EMPTY and drop it from a union, so a derivative is EMPTY exactly where these rules say. A
    // complement's derivative is EMPTY only where its operand's is everything: all bytes, to be safe.
    Bits first_bytes(const Node& n) const {
        const int32_t* a = args_.data() + n.args_begin;
        Bits first;
        switch (n.kind) {
            case kEmpty:
            case kEps:
                return first;
            case kBytes:
                return n.bits;
            case kConcat:
                first = nodes_[a[0]].first;
                return nodes_[a[0]].nullable ? first | nodes_[a[1]].first : first;
            case kAlt:
                for (uint32_t i = 0; i < n.args_len; ++i) first = first | nodes_[a[i]].first;
                return first;
            case kAnd:
                first = kAllBytes;
                for (uint32_t i = 0; i < n.args_len; ++i) first = first & nodes_[a[i]].first;
                return first;
            case kNot:
                return kAllBytes;
            case kRepeat:
            case kTag:
                return nodes_[a[0]].first;
        }
        return kAllBytes;
    }

    // Whether a plain node's language is surely infinite (byte_regex's `Term.infinite`). Every plain node
    // but EMPTY has a string and the constructors fold EMPTY operands away, so a concatenation is
    // infinite where an operand is, and a repeat where its body is or where it is unbounded over a body
    // that is not nullable (so has a non-empty string).
    bool infinite(const Node& n) const {
        const int32_t* a = args_.data() + n.args_begin;
        switch (n.kind) {
            case kConcat:
                return nodes_[a[0]].infinite || nodes_[a[1]].infinite;
            case kAlt:
                for (uint32_t i = 0; i < n.args_len; ++i)
                    if (nodes_[a[i]].infinite) return true;
                return false;
            case kRepeat:
                return nodes_[a[0]].infinite || (n.hi == kUnbounded && !nodes_[a[0]].nullable);
            case kTag:
                return nodes_[a[0]].infinite;
            default:
                return false;
        }
    }

    // Whether a node with an intersection or complement inside surely has a string, by structure
    // (byte_regex's `Term.inhabited`): an infinite plain language less finitely many strings (a key's
    // string where some keys are taken), and the unions, concatenations, repeats and tags of such.
    // `is_empty` answers these at once, where its search derived each one's classes first.
    bool inhabited(const Node& n) const {
        const int32_t* a = args_.data() + n.args_begin;
        switch (n.kind) {
            case kNot:
                return is_finite_plain(a[0]);
            case kAnd: {
                int infinite_plain = 0;
                for (uint32_t i = 0; i < n.args_len; ++i) {
                    const Node& member = nodes_[a[i]];
                    if (member.infinite)
                        ++infinite_plain;
                    else if (member.kind != kNot || !is_finite_plain(args(member)[0]))
                        return false;
                }
                return infinite_plain <= 1;
            }
            case kAlt:
                for (uint32_t i = 0; i < n.args_len; ++i)
                    if (nodes_[a[i]].inhabited) return true;
                return false;
            case kConcat:
                return nodes_[a[0]].inhabited && nodes_[a[1]].inhabited;
            case kRepeat:
            case kTag:
                return nodes_[a[0]].inhabited;
            default:
                return false;
        }
    }

    bool is_finite_plain(int32_t term) const { return nodes_[term].plain && !nodes_[term].infinite; }

    bool nullable(const Node& n) const {
        const int32_t* a = args_.data() + n.args_begin;
        switch (n.kind) {
            case kEps:
                return true;
            case kEmpty:
            case kBytes:
                return false;
            case kConcat:
                return nodes_[a[0]].nullable && nodes_[a[1]].nullable;
            case kAlt:
                for (uint32_t i = 0; i < n.args_len; ++i)
                    if (nodes_[a[i]].nullable) return true;
                return false;
            case kRepeat:
                return n.lo == 0 || nodes_[a[0]].nullable;
            case kAnd:
                for (uint32_t i = 0; i < n.args_len; ++i)
                    if (!nodes_[a[i]].nullable) return false;
                return true;
            case kNot:
                return !nodes_[a[0]].nullable;
            case kTag:
                return nodes_[a[0]].nullable;
        }
        return false;
    }

    void rehash() {
        std::vector<int32_t> slots(std::max<size_t>(1024, 2 * slots_.size()), -1);
        const uint64_t mask = slots.size() - 1;
        for (size_t id = 0; id < nodes_.size(); ++id) {
            const Node& n = nodes_[id];
            uint64_t slot = hash_of(n.kind, args(n), n.args_len, n.bits, n.lo, n.hi, n.tag, n.origin) & mask;
            while (slots[slot] >= 0) slot = (slot + 1) & mask;
            slots[slot] = static_cast<int32_t>(id);
        }
        slots_.swap(slots);
    }

    std::vector<Node> nodes_;
    std::vector<int32_t> args_;
    std::vector<int32_t> slots_;
    Memo derivatives_;
    Memo carried_;  // byte_regex term id -> node (`carried`)
    std::vector<std::vector<Bits>> partitions_;
    std::unordered_map<std::string, int32_t> partition_ids_;
    Memo meets_;
    std::unordered_map<int32_t, int> emptiness_;
    std::unordered_map<int64_t, std::unordered_map<int32_t, int32_t>> clamped_;  // by limit, then node
    int32_t any_byte_ = 0, anything_ = 0;
    int depth_ = 0;
};

// ---- the Python type ------------------------------------------------------------------------

struct StoreObject {
    PyObject_HEAD Store* store;
};

extern PyTypeObject StoreType;

bool valid_node(StoreObject* self, long long node) {
    if (node < 0 || static_cast<size_t>(node) >= self->store->size()) {
        PyErr_Format(PyExc_IndexError, "no term node %lld in this store", node);
        return false;
    }
    return true;
}

// The integers of the Python sequence `object`, appended to `values` (false: an error is set).
bool integers_of(PyObject* object, const char* not_a_sequence, std::vector<int64_t>& values) {
    PyObject* sequence = PySequence_Fast(object, not_a_sequence);
    if (sequence == nullptr) return false;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(sequence); ++i) {
        const long long value = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(sequence, i));
        if (value == -1 && PyErr_Occurred()) {
            Py_DECREF(sequence);
            return false;
        }
        values.push_back(value);
    }
    Py_DECREF(sequence);
    return true;
}

// The nodes of this store in the Python sequence `object`, appended to `nodes` (false: an error is set).
bool nodes_of(StoreObject* self, PyObject* object, const char* not_a_sequence, std::vector<int32_t>& nodes) {
    std::vector<int64_t> values;
    if (!integers_of(object, not_a_sequence, values)) return false;
    for (int64_t node : values) {
        if (!valid_node(self, node)) return false;
        nodes.push_back(static_cast<int32_t>(node));
    }
    return true;
}

// Runs `body`, turning the store's C++ exceptions into Python ones.
template <typename F>
PyObject* guarded(F body) {
    try {
        return body();
    } catch (const TooDeep&) {
        PyErr_SetString(PyExc_RecursionError, "a term is nested too deeply to derive");
    } catch (const PythonError&) {
    } catch (const std::bad_alloc&) {
        PyErr_NoMemory();
    }
    return nullptr;
}

PyObject* store_new(PyTypeObject* type, PyObject*, PyObject*) {
    auto* self = reinterpret_cast<StoreObject*>(type->tp_alloc(type, 0));
    if (self == nullptr) return nullptr;
    try {
        self->store = new Store();
    } catch (const std::bad_alloc&) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    return reinterpret_cast<PyObject*>(self);
}

void store_dealloc(StoreObject* self) {
    delete self->store;
    Py_TYPE(self)->tp_free(reinterpret_cast<PyObject*>(self));
}

// The attributes of a byte_regex.Term that `carry` reads. A Term keeps them in slots, read at their
// offsets (found once from the class's member descriptors): through PyObject_GetAttr, the lookup of
// the descriptor took a third of a carry.
enum TermSlot { kIdSlot, kKindSlot, kArgsSlot, kBitsSlot, kLoSlot, kHiSlot, kTagSlot, kTermSlots };

class TermSlots {
  public:
    // Names the slots (at import; false: an error is set).
    bool init() {
        static const char* const texts[kTermSlots] = {"id", "kind", "args", "bits", "lo", "hi", "tag"};
        for (int slot = 0; slot < kTermSlots; ++slot)
            if ((names_[slot] = PyUnicode_InternFromString(texts[slot])) == nullptr) return false;
        return (sixty_four = PyLong_FromLong(64)) != nullptr;
    }

    // The attribute `slot` of `term` (a new reference; nullptr with an error set: TypeError for an
    // object whose class keeps no such slots).
    PyObject* get(PyObject* term, TermSlot slot) {
        if (Py_TYPE(term) != type_ && !learn(Py_TYPE(term))) {
            PyErr_Format(PyExc_TypeError, "carry: a byte_regex.Term expected, got %s", Py_TYPE(term)->tp_name);
            return nullptr;
        }
        PyObject* value = *reinterpret_cast<PyObject**>(reinterpret_cast<char*>(term) + offsets_[slot]);
        if (value == nullptr) {
            PyErr_SetObject(PyExc_AttributeError, names_[slot]);
            return nullptr;
        }
        Py_INCREF(value);
        return value;
    }

    PyObject* sixty_four = nullptr;  // a byte set's word

  private:
    // Takes the slot offsets of `type` where each attribute is an object slot (false otherwise, no error set).
    bool learn(PyTypeObject* type) {
        Py_ssize_t offsets[kTermSlots];
        for (int slot = 0; slot < kTermSlots; ++slot) {
            PyObject* descriptor = PyObject_GetAttr(reinterpret_cast<PyObject*>(type), names_[slot]);
            if (descriptor == nullptr) return PyErr_Clear(), false;
            const bool member = PyObject_TypeCheck(descriptor, &PyMemberDescr_Type) &&
                                reinterpret_cast<PyMemberDescrObject*>(descriptor)->d_member->type == T_OBJECT_EX;
            if (member) offsets[slot] = reinterpret_cast<PyMemberDescrObject*>(descriptor)->d_member->offset;
            Py_DECREF(descriptor);
            if (!member) return false;
        }
        Py_INCREF(type);  // kept for good: its offsets are read by address
        Py_XDECREF(type_);
        type_ = type;
        std::copy(offsets, offsets + kTermSlots, offsets_);
        return true;
    }

    PyObject* names_[kTermSlots] = {};
    PyTypeObject* type_ = nullptr;
    Py_ssize_t offsets_[kTermSlots] = {};
};

TermSlots term_slots;

// An attribute of a term as a C integer (false: an error is set; OverflowError past 64 bits). With
// `none_allowed`, None reads as kUnbounded (a counter's `hi`).
bool integer_attribute(PyObject* term, TermSlot slot, int64_t& value, bool none_allowed = false) {
    PyObject* object = term_slots.get(term, slot);
    if (object == nullptr) return false;
    if (none_allowed && object == Py_None) {
        value = kUnbounded;
    } else {
        value = PyLong_AsLongLong(object);
    }
    Py_DECREF(object);
    return !(value == -1 && PyErr_Occurred());
}

// A term's byte set (an int of at most 256 bits) as words (false: an error is set).
bool bits_attribute(PyObject* term, Bits& bits) {
    PyObject* rest = term_slots.get(term, kBitsSlot);
    if (rest == nullptr) return false;
    for (int i = 0; i < 4 && rest != nullptr; ++i) {
        bits.w[i] = PyLong_AsUnsignedLongLongMask(rest);
        if (bits.w[i] == static_cast<uint64_t>(-1) && PyErr_Occurred()) break;
        const int zero = PyObject_Not(rest);
        if (zero < 0) break;
        if (zero) return Py_DECREF(rest), true;  // no higher words
        PyObject* shifted = PyNumber_Rshift(rest, term_slots.sixty_four);
        Py_DECREF(rest);
        rest = shifted;
    }
    if (rest == nullptr || PyErr_Occurred()) return Py_XDECREF(rest), false;
    const int beyond = PyObject_IsTrue(rest);
    Py_DECREF(rest);
    if (beyond) {
        if (beyond > 0) PyErr_SetString(PyExc_OverflowError, "carry: a byte set wider than 256 bits");
        return false;
    }
    return true;
}

// carry(terms, term_of_node, generation_start, constants) -> [int]: the node of each byte_regex term of
//   the tuple `terms`, interning the subterms not known here (`Store::carried`, by term id) in post-order,
//   without recursion; each is remembered, and entered in `term_of_node` (node -> term) unless a twin is
//   there. A term older than `generation_start` and not one of `constants` (a tuple) is carried with its
//   id as origin (see the top of this file). In one call: carrying a node at a time from Python cost
//   ~2 us a node, and a schema's terminals (a pattern's classes, a format) are carried when a mask first
//   needs their lexer state, hundreds of nodes in one token mask; and a lexeme start carries all the
//   lexemes it allows, known ones too (a call each cost ~0.15 us a term, 7 us for 50). The ids known are
//   kept here (`carried`): a Python dict of them cost ~15% of each node carried, and held an int pair
//   per node.
PyObject* store_carry(StoreObject* self, PyObject* args) {
    PyObject *roots, *term_of_node, *constants;
    long long generation_start;
    if (!PyArg_ParseTuple(args, "O!O!LO!", &PyTuple_Type, &roots, &PyDict_Type, &term_of_node, &generation_start,
                          &PyTuple_Type, &constants))
        return nullptr;
    // Each pending term is borrowed: the roots from the caller, the others from their parent's args.
    std::vector<PyObject*> pending;
    std::vector<int32_t> members;
    auto node_of = [&](PyObject* term, int32_t& node) -> int {  // 1 found, 0 missing, -1 error
        int64_t id;
        if (!integer_attribute(term, kIdSlot, id)) return -1;
        const int32_t* found = self->store->carried(id);
        if (found == nullptr) return 0;
        node = *found;
        return 1;
    };
    // Carries `root`, leaving its node in `node`; false with a Python exception set.
    auto carry_root = [&](PyObject* root, int32_t& node) -> bool {
        pending.assign(1, root);
        while (!pending.empty()) {
            PyObject* top = pending.back();
            const int top_known = node_of(top, node);
            if (top_known < 0) return false;
            if (top_known) {
                pending.pop_back();
                continue;
            }
            PyObject* term_args = term_slots.get(top, kArgsSlot);
            if (term_args == nullptr) return false;
            if (!PyTuple_Check(term_args)) {
                Py_DECREF(term_args);
                PyErr_SetString(PyExc_TypeError, "carry: a term's args must be a tuple");
                return false;
            }
            const size_t before = pending.size();
            members.clear();
            for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(term_args); ++i) {
                PyObject* member = PyTuple_GET_ITEM(term_args, i);
                int32_t member_node = 0;
                const int member_known = node_of(member, member_node);
                if (member_known < 0) return Py_DECREF(term_args), false;
                if (member_known) {
                    members.push_back(member_node);
                } else {
                    pending.push_back(member);
                }
            }
            Py_DECREF(term_args);  // the term still holds it
            if (pending.size() > before) continue;
            int64_t kind, id, lo, hi, tag;
            Bits bits;
            if (!integer_attribute(top, kKindSlot, kind) || !integer_attribute(top, kIdSlot, id) ||
                !integer_attribute(top, kLoSlot, lo) || !integer_attribute(top, kHiSlot, hi, true) ||
                !integer_attribute(top, kTagSlot, tag) || !bits_attribute(top, bits))
                return false;
            if (kind < kEmpty || kind > kTag) return PyErr_Format(PyExc_ValueError, "carry: no term kind %lld", kind), false;
            bool current = id >= generation_start;
            for (Py_ssize_t i = 0; !current && i < PyTuple_GET_SIZE(constants); ++i)
                current = PyTuple_GET_ITEM(constants, i) == top;
            node = self->store->intern_normal(static_cast<Kind>(kind), members, bits, lo, hi, tag, current ? 0 : id);
            self->store->remember(id, node);
            PyObject* node_object = PyLong_FromLong(node);
            const bool entered = node_object != nullptr && PyDict_SetDefault(term_of_node, node_object, top) != nullptr;
            Py_XDECREF(node_object);
            if (!entered) return false;
            pending.pop_back();
        }
        return true;
    };
    return guarded([&]() -> PyObject* {
        std::vector<int32_t> nodes(PyTuple_GET_SIZE(roots));
        for (size_t i = 0; i < nodes.size(); ++i)
            if (!carry_root(PyTuple_GET_ITEM(roots, static_cast<Py_ssize_t>(i)), nodes[i])) return nullptr;
        PyObject* list = PyList_New(static_cast<Py_ssize_t>(nodes.size()));
        for (size_t i = 0; list != nullptr && i < nodes.size(); ++i) {
            PyObject* node = PyLong_FromLong(nodes[i]);
            if (node == nullptr) Py_CLEAR(list);
            else PyList_SET_ITEM(list, static_cast<Py_ssize_t>(i), node);
        }
        return list;
    });
}

// describe(node) -> (kind, members, bits: bytes[32], lo, hi (-1: None), tag)
PyObject* store_describe(StoreObject* self, PyObject* arg) {
    const long long id = PyLong_AsLongLong(arg);
    if ((id == -1 && PyErr_Occurred()) || !valid_node(self, id)) return nullptr;
    const Store& store = *self->store;
    const Node& n = store.node(static_cast<int32_t>(id));
    PyObject* members = PyTuple_New(n.args_len);
    if (members == nullptr) return nullptr;
    for (uint32_t i = 0; i < n.args_len; ++i) PyTuple_SET_ITEM(members, i, PyLong_FromLong(store.args(n)[i]));
    return Py_BuildValue("(iNy#LLL)", static_cast<int>(n.kind), members, reinterpret_cast<const char*>(n.bits.w),
                         static_cast<Py_ssize_t>(sizeof n.bits.w), static_cast<long long>(n.lo),
                         static_cast<long long>(n.hi), static_cast<long long>(n.tag));
}

// is_empty(node, check) -> True, False or None (undecided), as byte_regex.is_empty.
PyObject* store_is_empty(StoreObject* self, PyObject* args) {
    long long id;
    PyObject* check;
    if (!PyArg_ParseTuple(args, "LO", &id, &check) || !valid_node(self, id)) return nullptr;
    return guarded([&]() -> PyObject* {
        const int verdict = self->store->is_empty(static_cast<int32_t>(id), check);
        if (verdict < 0) Py_RETURN_NONE;
        return PyBool_FromLong(verdict);
    });
}

// clamp(node, limit) -> node, as byte_regex.clamp_counters.
PyObject* store_clamp(StoreObject* self, PyObject* args) {
    long long id, limit;
    if (!PyArg_ParseTuple(args, "LL", &id, &limit) || !valid_node(self, id)) return nullptr;
    return guarded([&]() -> PyObject* { return PyLong_FromLong(self->store->clamp(static_cast<int32_t>(id), limit)); });
}

// tag_free_form(node) -> (lexemes, tags) or None: a plain union of lexemes under distinct tags as the
//   node of each lexeme and its tag, ordered by lexeme then tag (lexer.tag_free_form); None for any other node.
PyObject* store_tag_free_form(StoreObject* self, PyObject* arg) {
    const long long id = PyLong_AsLongLong(arg);
    if ((id == -1 && PyErr_Occurred()) || !valid_node(self, id)) return nullptr;
    return guarded([&]() -> PyObject* {
        std::vector<std::pair<int32_t, int64_t>> form;
        if (!self->store->tag_free_form(static_cast<int32_t>(id), form)) Py_RETURN_NONE;
        PyObject* lexemes = PyTuple_New(static_cast<Py_ssize_t>(form.size()));
        PyObject* tags = PyTuple_New(static_cast<Py_ssize_t>(form.size()));
        bool built = lexemes != nullptr && tags != nullptr;
        for (size_t i = 0; built && i < form.size(); ++i) {
            PyObject* lexeme = PyLong_FromLong(form[i].first);
            PyObject* tag = PyLong_FromLongLong(form[i].second);
            if (lexeme != nullptr) PyTuple_SET_ITEM(lexemes, i, lexeme);
            if (tag != nullptr) PyTuple_SET_ITEM(tags, i, tag);
            built = lexeme != nullptr && tag != nullptr;
        }
        if (!built) {  // a tuple's unset items are NULL, which its deallocation skips
            Py_XDECREF(lexemes);
            Py_XDECREF(tags);
            return nullptr;
        }
        return Py_BuildValue("(NN)", lexemes, tags);
    });
}

// retag(node, tags, new_tags) -> node: the union `node` with each member tagged tags[i] tagged new_tags[i].
PyObject* store_retag(StoreObject* self, PyObject* args) {
    long long id;
    PyObject *tags_object, *new_tags_object;
    if (!PyArg_ParseTuple(args, "LOO", &id, &tags_object, &new_tags_object) || !valid_node(self, id)) return nullptr;
    std::vector<int64_t> tags, new_tags;
    if (!integers_of(tags_object, "retag: tags must be a sequence", tags) ||
        !integers_of(new_tags_object, "retag: new_tags must be a sequence", new_tags))
        return nullptr;
    if (tags.size() != new_tags.size()) {
        PyErr_SetString(PyExc_ValueError, "retag: tags and new_tags differ in length");
        return nullptr;
    }
    return guarded([&]() -> PyObject* {
        return PyLong_FromLong(self->store->retag(static_cast<int32_t>(id), tags, new_tags));
    });
}

// The sorted tags of a node's accepting members, as a tuple (nullptr with an error set).
PyObject* accepting_tags_of(const Store& store, int32_t node) {
    const std::vector<int64_t> tags = store.accepting_tags(node);
    PyObject* result = PyTuple_New(static_cast<Py_ssize_t>(tags.size()));
    if (result == nullptr) return nullptr;
    for (size_t i = 0; i < tags.size(); ++i) PyTuple_SET_ITEM(result, i, PyLong_FromLongLong(tags[i]));
    return result;
}

// (nullable, tags) of a node: whether it accepts, and the sorted tags of its accepting members.
PyObject* accepting_of(const Store& store, int32_t node) {
    PyObject* tags = accepting_tags_of(store, node);
    if (tags == nullptr) return nullptr;
    return Py_BuildValue("(ON)", store.node(node).nullable ? Py_True : Py_False, tags);
}

// accepting(node) -> (nullable, tags): whether the node accepts, and the sorted tags of its accepting members.
PyObject* store_accepting(StoreObject* self, PyObject* arg) {
    const long long id = PyLong_AsLongLong(arg);
    if ((id == -1 && PyErr_Occurred()) || !valid_node(self, id)) return nullptr;
    return guarded([&]() -> PyObject* { return accepting_of(*self->store, static_cast<int32_t>(id)); });
}

// A writable buffer of a Python object (a numpy array of the lexer), released with the view.
struct WritableView {
    Py_buffer buffer{};
    bool held = false;
    ~WritableView() {
        if (held) PyBuffer_Release(&buffer);
    }
    bool get(PyObject* object, const char* what, Py_ssize_t itemsize) {
        if (PyObject_GetBuffer(object, &buffer, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) != 0) return false;
        held = true;
        if (buffer.itemsize != itemsize) {
            PyErr_Format(PyExc_TypeError, "%s: expected items of %zd bytes", what, itemsize);
            return false;
        }
        return true;
    }
    Py_ssize_t count() const { return buffer.len / buffer.itemsize; }
    template <typename T>
    T* data() const {
        return static_cast<T*>(buffer.buf);
    }
};

// The lexer's books of states (passed by `LexerTables._numbering`), where a node newly numbered as a state
// is entered at once: (sid_of_node: dict, node_of_sid: dict, terms: list, rows: list, accepting_tags:
// list, accepting: bool array, max_states). A new state is the next index of `terms`; its term and row
// tuple start as None, its tags and accepting flag are the node's. Entering it here, with the rows
// written to the tables, not through a list the lexer allocated from afterwards, spared ~5 us of Python
// per batch of rows (a corpus pass fills ~20k batches, most of one sparse row), and a call stopped
// midway leaves every state it numbered entered.
struct Books {
    PyObject *sid_of_node, *node_of_sid, *terms, *rows, *accepting_tags;
    WritableView accepting;
    long long max_states = 0;

    bool take(PyObject* books) {
        PyObject* accepting_object;
        if (!PyArg_ParseTuple(books, "O!O!O!O!O!OL;books: (sid_of_node, node_of_sid, terms, rows, accepting_tags, "
                                     "accepting, max_states)",
                              &PyDict_Type, &sid_of_node, &PyDict_Type, &node_of_sid, &PyList_Type, &terms,
                              &PyList_Type, &rows, &PyList_Type, &accepting_tags, &accepting_object, &max_states))
            return false;
        return accepting.get(accepting_object, "books: accepting", 1);
    }

    // The state of `node`, numbering it where it has none: 0 (the dead state) if it is empty, else the
    // next state, entered in every book. -1 where the next state would be `max_states` or past the
    // room of the lexer's tables (`accepting`); throws PythonError when a Python call fails.
    int32_t state_of(Store& store, int32_t node, PyObject* check) {
        PyObject* key = PyLong_FromLong(node);
        if (key == nullptr) throw PythonError{};
        PyObject* found = PyDict_GetItemWithError(sid_of_node, key);  // borrowed
        if (found != nullptr) {
            Py_DECREF(key);
            const long state = PyLong_AsLong(found);
            if (state == -1 && PyErr_Occurred()) throw PythonError{};
            return static_cast<int32_t>(state);
        }
        int32_t state = 0;
        try {
            if (PyErr_Occurred()) throw PythonError{};
            if (store.is_empty(node, check) != 1) {
                const Py_ssize_t next = PyList_GET_SIZE(terms);
                if (next >= max_states || next >= accepting.count()) {
                    Py_DECREF(key);
                    return -1;
                }
                state = static_cast<int32_t>(next);
                enter(store, node, key, state);
            }
            PyObject* value = PyLong_FromLong(state);
            const bool entered = value != nullptr && PyDict_SetItem(sid_of_node, key, value) == 0;
            Py_XDECREF(value);
            if (!entered) throw PythonError{};
        } catch (...) {
            Py_DECREF(key);
            throw;
        }
        Py_DECREF(key);
        return state;
    }

  private:
    // Enters `node` (its key `node_key`) as the new state `state` in every book but `sid_of_node`.
    void enter(const Store& store, int32_t node, PyObject* node_key, int32_t state) {
        PyObject* tags = accepting_tags_of(store, node);
        if (tags == nullptr) throw PythonError{};
        PyObject* state_key = PyLong_FromLong(state);
        const bool entered = state_key != nullptr && PyList_Append(terms, Py_None) == 0 &&
                             PyList_Append(rows, Py_None) == 0 && PyList_Append(accepting_tags, tags) == 0 &&
                             PyDict_SetItem(node_of_sid, state_key, node_key) == 0;
        Py_DECREF(tags);
        Py_XDECREF(state_key);
        if (!entered) throw PythonError{};
        accepting.data<uint8_t>()[state] = store.node(node).nullable;
    }
};

// state(node, books, check) -> int or None: the lexer state of `node` (`Books::state_of`; None where a
//   new state would be `max_states` or past the tables' room).
PyObject* store_state(StoreObject* self, PyObject* args) {
    PyObject *books_object, *check;
    long long node;
    if (!PyArg_ParseTuple(args, "LO!O", &node, &PyTuple_Type, &books_object, &check) || !valid_node(self, node))
        return nullptr;
    Books books;
    if (!books.take(books_object)) return nullptr;
    return guarded([&]() -> PyObject* {
        const int32_t state = books.state_of(*self->store, static_cast<int32_t>(node), check);
        if (state < 0) Py_RETURN_NONE;
        return PyLong_FromLong(state);
    });
}

// start(nodes, tags, books, check) -> int or None: the lexer state of the union of `nodes`, each tagged
//   with the same item of `tags` (byte_regex's alt of tags, built here: a lexeme start built as a Python
//   term and carried over cost about as much as carrying its lexemes), numbered as `state` numbers a node.
PyObject* store_start(StoreObject* self, PyObject* args) {
    PyObject *nodes_object, *tags_object, *books_object, *check;
    if (!PyArg_ParseTuple(args, "OOO!O", &nodes_object, &tags_object, &PyTuple_Type, &books_object, &check))
        return nullptr;
    std::vector<int32_t> nodes;
    std::vector<int64_t> tags;
    if (!nodes_of(self, nodes_object, "start: nodes must be a sequence", nodes) ||
        !integers_of(tags_object, "start: tags must be a sequence", tags))
        return nullptr;
    if (nodes.size() != tags.size()) {
        PyErr_SetString(PyExc_ValueError, "start: nodes and tags differ in length");
        return nullptr;
    }
    Books books;
    if (!books.take(books_object)) return nullptr;
    return guarded([&]() -> PyObject* {
        Store& store = *self->store;
        std::vector<int32_t> tagged;
        tagged.reserve(nodes.size());
        for (size_t i = 0; i < nodes.size(); ++i) tagged.push_back(store.tag(tags[i], nodes[i]));
        const int32_t state = books.state_of(store, store.alt(tagged), check);
        if (state < 0) Py_RETURN_NONE;
        return PyLong_FromLong(state);
    });
}

// The lexer's tables a fill writes: `trans` (int32 [capacity, 256]), `has_row` (bool [capacity]: the
// whole row is written) and `has_entry` (uint64 [capacity, 4]: the bytes of a row without `has_row`
// whose successor is written, one bit each).
struct RowTables {
    WritableView trans, has_row, has_entry;

    bool take(PyObject* trans_object, PyObject* has_row_object, PyObject* has_entry_object, const char* caller) {
        if (!trans.get(trans_object, "trans", 4) || !has_row.get(has_row_object, "has_row", 1) ||
            !has_entry.get(has_entry_object, "has_entry", 8))
            return false;
        if (trans.count() != 256 * has_row.count() || has_entry.count() != 4 * has_row.count()) {
            PyErr_Format(PyExc_ValueError, "%s: trans must hold 256 successors and has_entry 4 words per has_row entry",
                         caller);
            return false;
        }
        return true;
    }

    // The node in the books of `state`, whose row is to be written: -1 where it is written already, -2
    // where the state has no node (appended to `without_node` unless that is null); throws PythonError
    // for a state past the tables.
    long long node_to_fill(StoreObject* self, const Books& books, long long state, PyObject* without_node) const {
        if (state < 0 || state >= has_row.count()) {
            PyErr_Format(PyExc_IndexError, "fill: no lexer state %lld in the tables", state);
            throw PythonError{};
        }
        if (has_row.data<uint8_t>()[state]) return -1;
        PyObject* key = PyLong_FromLongLong(state);
        if (key == nullptr) throw PythonError{};
        PyObject* node_object = PyDict_GetItemWithError(books.node_of_sid, key);  // borrowed
        const bool missing = node_object == nullptr && !PyErr_Occurred();
        const bool kept = missing && (without_node == nullptr || PyList_Append(without_node, key) == 0);
        Py_DECREF(key);
        if (kept) return -2;
        if (node_object == nullptr) throw PythonError{};
        const long long node = PyLong_AsLongLong(node_object);
        if ((node == -1 && PyErr_Occurred()) || !valid_node(self, node)) throw PythonError{};
        return node;
    }

    // Writes the successor of `node` (the node of `state`) on the bytes of its derivative class `part`,
    // numbered by `books`, and marks them written (the row, once all are). Returns the successor, -1
    // where numbering it would pass the books' room.
    int32_t write_class(Store& store, Books& books, long long state, int32_t node, const Bits& part, PyObject* check) {
        Store::call(check);
        const int32_t next = books.state_of(store, store.derivative(node, part.lowest()), check);
        if (next < 0) return -1;
        int32_t* row = trans.data<int32_t>() + state * 256;
        uint64_t* written = has_entry.data<uint64_t>() + state * 4;
        bool whole = true;
        for (int word = 0; word < 4; ++word) {
            for (uint64_t bits = part.w[word]; bits != 0; bits &= bits - 1)
                row[word * 64 + __builtin_ctzll(bits)] = next;
            written[word] |= part.w[word];
            whole &= written[word] == ~0ull;
        }
        if (whole) has_row.data<uint8_t>()[state] = 1;
        return next;
    }

    // Writes the successor of `node` (the node of `state`) on `byte` with the rest of its derivative class
    // where it is not written yet, and the whole row where that successor is `state` itself: a state that
    // loops (inside a string, say) gets its whole row, as the walk takes a subtree that stays inside at
    // once where a state's row loops on every text byte (`Loops` in _walk.h). Returns the successor, -1
    // where the books ran out of room.
    int32_t write_entry(Store& store, Books& books, long long state, int32_t node, int byte, PyObject* check) {
        const uint64_t* written = has_entry.data<uint64_t>() + state * 4;
        if ((written[byte >> 6] >> (byte & 63)) & 1) return trans.data<int32_t>()[state * 256 + byte];
        const std::vector<Bits>& parts = store.classes(node);
        const Bits part = *std::find_if(parts.begin(), parts.end(), [&](const Bits& p) { return p.has(byte); });
        const int32_t next = write_class(store, books, state, node, part, check);
        return next < 0 || (next == state && !write_row(store, books, state, node, check)) ? -1 : next;
    }

    // Writes the classes of `node`'s row not written yet (`fill`'s row). False where the books run out of room.
    bool write_row(Store& store, Books& books, long long state, int32_t node, PyObject* check) {
        const std::vector<Bits> parts = store.classes(node);  // a copy: deriving adds more
        const uint64_t* written = has_entry.data<uint64_t>() + state * 4;
        for (const Bits& part : parts) {
            const int byte = part.lowest();
            if ((written[byte >> 6] >> (byte & 63)) & 1) continue;  // its class is written
            if (write_class(store, books, state, node, part, check) < 0) return false;
        }
        has_row.data<uint8_t>()[state] = 1;
        return true;
    }
};

// The frame of `fill` and `fill_entries`: parses (items, trans, has_row, has_entry, books, check), runs
// `write(store, books, tables, item, check, without_node)` on each int of `items` (false: the books ran
// out of room), and returns the states without a node, or None once out of room.
template <typename Write>
PyObject* filling(StoreObject* self, PyObject* args, const char* name, Write write) {
    PyObject *items, *trans_object, *has_row_object, *has_entry_object, *books_object, *check;
    if (!PyArg_ParseTuple(args, "O!OOOO!O", &PyList_Type, &items, &trans_object, &has_row_object, &has_entry_object,
                          &PyTuple_Type, &books_object, &check))
        return nullptr;
    Books books;
    RowTables tables;
    if (!books.take(books_object) || !tables.take(trans_object, has_row_object, has_entry_object, name))
        return nullptr;
    PyObject* without_node = PyList_New(0);
    if (without_node == nullptr) return nullptr;
    PyObject* result = guarded([&]() -> PyObject* {
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); ++i) {
            const long long item = PyLong_AsLongLong(PyList_GET_ITEM(items, i));
            if (item == -1 && PyErr_Occurred()) throw PythonError{};
            if (item < 0) {
                PyErr_Format(PyExc_IndexError, "%s: a negative item %lld", name, item);
                throw PythonError{};
            }
            if (!write(*self->store, books, tables, item, check, without_node)) Py_RETURN_NONE;
        }
        Py_INCREF(without_node);
        return without_node;
    });
    Py_DECREF(without_node);
    return result;
}

// fill(states, trans, has_row, has_entry, books, check) -> list or None: the transition rows of lexer
//   `states` (a list) that have a node in the books and no row yet, written to the tables (`RowTables`);
//   every byte's derivative is numbered as a state by `Books::state_of`. Returns the states without a
//   node (for the caller to carry or derive), or None once a new state would be `max_states` or past
//   the tables' room (the rows written stay). `check` is called before each derivative (None: never).
PyObject* store_fill(StoreObject* self, PyObject* args) {
    return filling(self, args, "fill",
                   [&](Store& store, Books& books, RowTables& tables, long long state, PyObject* check,
                       PyObject* without_node) {
                       const long long node = tables.node_to_fill(self, books, state, without_node);
                       return node < 0 || tables.write_row(store, books, state, static_cast<int32_t>(node), check);
                   });
}

// fill_entries(entries, trans, has_row, has_entry, books, check) -> list or None: as `fill`, for single
//   transitions (a sorted list of `state * 256 + byte`): each byte's successor is written with the rest
//   of its derivative class, and a state's whole row where that successor is the state itself. A
//   corpus pass's walks read a third of the classes of the rows they reach, and as states of their
//   own under half of those rows' successors.
PyObject* store_fill_entries(StoreObject* self, PyObject* args) {
    long long state = -1, node = -1;  // of the entries before: a state's entries come together
    return filling(self, args, "fill_entries",
                   [&](Store& store, Books& books, RowTables& tables, long long entry, PyObject* check,
                       PyObject* without_node) {
                       if (entry >> 8 != state) {
                           state = entry >> 8;
                           node = tables.node_to_fill(self, books, state, without_node);
                       }
                       return node < 0 || tables.write_entry(store, books, state, static_cast<int32_t>(node),
                                                             static_cast<int>(entry & 255), check) >= 0;
                   });
}

// The context of a walk filler (`_lexer_filler.h`): the tables and books it writes, held (with their
// views) for as long as the capsule lives.
struct FillerContext {
    stencil_lexer::LexerFiller api{};
    StoreObject* self = nullptr;
    PyObject* objects[5] = {};  // trans, has_row, has_entry, books, check: references held
    Books books;
    RowTables tables;
    PyObject* check = Py_None;

    ~FillerContext() {
        for (PyObject* object : objects) Py_XDECREF(object);
        Py_XDECREF(reinterpret_cast<PyObject*>(self));
    }

    // `write(node)` for `state`'s node, as the filler functions answer: its result where the state has a
    // node and no row yet, `written` where the row is written, kCannot / kFailed otherwise.
    template <typename Write>
    int32_t filled(long long state, int32_t written, Write write) {
        try {
            const long long node = tables.node_to_fill(self, books, state, nullptr);
            if (node == -1) return written;
            return node < 0 ? stencil_lexer::kCannot : write(static_cast<int32_t>(node));
        } catch (const TooDeep&) {
            return stencil_lexer::kCannot;  // Python's fill names the terminal nested too deeply
        } catch (const PythonError&) {
            return stencil_lexer::kFailed;
        } catch (const std::bad_alloc&) {
            PyErr_NoMemory();
            return stencil_lexer::kFailed;
        }
    }

    static int32_t fill_entry(void* context, int32_t state, uint8_t byte) {
        auto& c = *static_cast<FillerContext*>(context);
        const bool in_tables = state < c.tables.has_row.count();  // else `filled` raises IndexError
        const int32_t written = in_tables ? c.tables.trans.data<int32_t>()[state * 256LL + byte] : 0;
        return c.filled(state, written, [&](int32_t node) {
            const int32_t next = c.tables.write_entry(*c.self->store, c.books, state, node, byte, c.check);
            return next < 0 ? stencil_lexer::kCannot : next;
        });
    }

    static int32_t fill_row(void* context, int32_t state) {
        auto& c = *static_cast<FillerContext*>(context);
        return c.filled(state, 0, [&](int32_t node) {
            return c.tables.write_row(*c.self->store, c.books, state, node, c.check) ? 0 : stencil_lexer::kCannot;
        });
    }
};

void delete_filler(PyObject* capsule) {
    delete static_cast<FillerContext*>(PyCapsule_GetContext(capsule));
}

// walk_filler(trans, has_row, has_entry, books, check) -> capsule: the `LexerFiller` (`_lexer_filler.h`)
//   through which the compiled walk writes, as `fill_entries` and `fill` would, the transitions it meets
//   missing, into these tables and books: valid while the caller holds the lexer's lock and no other
//   call fills them.
PyObject* store_walk_filler(StoreObject* self, PyObject* args) {
    PyObject *trans_object, *has_row_object, *has_entry_object, *books_object, *check;
    if (!PyArg_ParseTuple(args, "OOOO!O", &trans_object, &has_row_object, &has_entry_object, &PyTuple_Type,
                          &books_object, &check))
        return nullptr;
    auto* context = new (std::nothrow) FillerContext();
    if (context == nullptr) return PyErr_NoMemory();
    PyObject* held[5] = {trans_object, has_row_object, has_entry_object, books_object, check};
    for (int i = 0; i < 5; ++i) {
        Py_INCREF(held[i]);
        context->objects[i] = held[i];
    }
    Py_INCREF(self);
    context->self = self;
    context->check = check;
    context->api = {context, &FillerContext::fill_entry, &FillerContext::fill_row};
    if (!context->books.take(books_object) ||
        !context->tables.take(trans_object, has_row_object, has_entry_object, "walk_filler")) {
        delete context;
        return nullptr;
    }
    PyObject* capsule = PyCapsule_New(&context->api, stencil_lexer::kFillerCapsule, delete_filler);
    if (capsule == nullptr || PyCapsule_SetContext(capsule, context) != 0) {
        Py_XDECREF(capsule);  // its destructor has no context yet: deleted here
        delete context;
        return nullptr;
    }
    return capsule;
}

PyObject* bytes_of(const std::vector<int32_t>& values) {
    return PyBytes_FromStringAndSize(reinterpret_cast<const char*>(values.data()),
                                     static_cast<Py_ssize_t>(values.size() * sizeof(int32_t)));
}

// adopt(source, nodes) -> (int32 bytes, int32 bytes): the node in this store of each of `nodes` of `source` (a
//   Store of the same generation of terms), carried over with their subterms; and (source node, node here)
//   pairs of the nodes carried that stand for terms of an older generation.
PyObject* store_adopt(StoreObject* self, PyObject* args) {
    PyObject *source_object, *nodes_object;
    if (!PyArg_ParseTuple(args, "O!O", &StoreType, &source_object, &nodes_object)) return nullptr;
    auto* source = reinterpret_cast<StoreObject*>(source_object);
    if (source == self) {
        PyErr_SetString(PyExc_ValueError, "adopt: a store cannot adopt its own nodes");
        return nullptr;
    }
    std::vector<int32_t> nodes;
    if (!nodes_of(source, nodes_object, "adopt: nodes must be a sequence", nodes)) return nullptr;
    return guarded([&]() -> PyObject* {
        std::vector<int32_t> twins;
        const std::vector<int32_t> adopted = self->store->adopt(*source->store, nodes, twins);
        // Bytes made here: "y#" would make None of an empty vector's null data.
        return Py_BuildValue("(NN)", bytes_of(adopted), bytes_of(twins));
    });
}

// remember(term_id, node): a term read back from `node` (`CompiledTerms.term`), which carrying it finds.
PyObject* store_remember(StoreObject* self, PyObject* args) {
    long long term_id, node;
    if (!PyArg_ParseTuple(args, "LL", &term_id, &node) || !valid_node(self, node)) return nullptr;
    self->store->remember(term_id, static_cast<int32_t>(node));
    Py_RETURN_NONE;
}

PyObject* store_len(StoreObject* self, PyObject*) { return PyLong_FromSize_t(self->store->size()); }

PyMethodDef store_methods[] = {
    {"carry", reinterpret_cast<PyCFunction>(store_carry), METH_VARARGS,
     "The nodes of a tuple of byte_regex terms, their missing subterms interned: (terms, term_of_node, "
     "generation_start, constants) -> [node]."},
    {"remember", reinterpret_cast<PyCFunction>(store_remember), METH_VARARGS,
     "Notes that the byte_regex term of an id is a node's (read back from it): (term_id, node)."},
    {"describe", reinterpret_cast<PyCFunction>(store_describe), METH_O,
     "(kind, members, bits, lo, hi (-1: None), tag) of a node."},
    {"state", reinterpret_cast<PyCFunction>(store_state), METH_VARARGS,
     "The lexer state of a node, entered in the lexer's books if new: (node, books, check) -> state."},
    {"start", reinterpret_cast<PyCFunction>(store_start), METH_VARARGS,
     "The lexer state of a union of tagged nodes, entered in the lexer's books if new: (nodes, tags, books, "
     "check) -> state."},
    {"fill", reinterpret_cast<PyCFunction>(store_fill), METH_VARARGS,
     "Transition rows of lexer states written to the lexer's tables: (states, trans, has_row, has_entry, books, "
     "check) -> states without a node."},
    {"fill_entries", reinterpret_cast<PyCFunction>(store_fill_entries), METH_VARARGS,
     "Single transitions (state * 256 + byte) written to the lexer's tables with their derivative classes: "
     "(entries, trans, has_row, has_entry, books, check) -> states without a node."},
    {"walk_filler", reinterpret_cast<PyCFunction>(store_walk_filler), METH_VARARGS,
     "A capsule through which the compiled walk writes the transitions it lacks to the lexer's tables in place: "
     "(trans, has_row, has_entry, books, check) -> capsule."},
    {"is_empty", reinterpret_cast<PyCFunction>(store_is_empty), METH_VARARGS,
     "Whether a node matches no string (None: undecided), as byte_regex.is_empty."},
    {"clamp", reinterpret_cast<PyCFunction>(store_clamp), METH_VARARGS,
     "The node with every counter bounded beyond a limit relaxed, as byte_regex.clamp_counters."},
    {"accepting", reinterpret_cast<PyCFunction>(store_accepting), METH_O,
     "(nullable, tags): whether a node accepts, and the sorted tags of its members that accept."},
    {"tag_free_form", reinterpret_cast<PyCFunction>(store_tag_free_form), METH_O,
     "(lexemes, tags) of a plain union of lexemes under distinct tags, ordered by lexeme; None otherwise."},
    {"retag", reinterpret_cast<PyCFunction>(store_retag), METH_VARARGS,
     "The union with each member tagged tags[i] tagged new_tags[i] instead: (node, tags, new_tags) -> node."},
    {"adopt", reinterpret_cast<PyCFunction>(store_adopt), METH_VARARGS,
     "Nodes of another store of the same generation carried here: (source, nodes) -> (nodes here, origin pairs)."},
    {"num_nodes", reinterpret_cast<PyCFunction>(store_len), METH_NOARGS, "How many nodes the store holds."},
    {nullptr, nullptr, 0, nullptr},
};

PyTypeObject StoreType = {PyVarObject_HEAD_INIT(nullptr, 0)};

// untrack(*objects): takes each object out of the cyclic collector's tracking (`byte_regex._intern`).
// A hash-consed term holds only older terms, ints and tuples of them, so no cycle passes through it,
// and a full collection need not visit it: after 100 schemas terms and their argument tuples were
// 40% of what one visited.
PyObject* untrack(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    for (Py_ssize_t i = 0; i < nargs; ++i)
        if (PyObject_IS_GC(args[i]) && PyObject_GC_IsTracked(args[i])) PyObject_GC_UnTrack(args[i]);
    Py_RETURN_NONE;
}

PyMethodDef module_methods[] = {
    {"untrack", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(untrack)), METH_FASTCALL,
     "Take objects that can be in no reference cycle out of the collector's tracking."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_derivatives", "Compiled derivatives of byte-regex terms.", -1,
                      module_methods};

}  // namespace

PyMODINIT_FUNC PyInit__derivatives() {
    StoreType.tp_name = "grammars.core._derivatives.Store";
    StoreType.tp_basicsize = sizeof(StoreObject);
    StoreType.tp_flags = Py_TPFLAGS_DEFAULT;
    StoreType.tp_doc = "A hash-consing table of byte-regex terms with their derivatives (see byte_regex).";
    StoreType.tp_new = store_new;
    StoreType.tp_dealloc = reinterpret_cast<destructor>(store_dealloc);
    StoreType.tp_methods = store_methods;
    if (PyType_Ready(&StoreType) < 0) return nullptr;
    if (!term_slots.init()) return nullptr;
    PyObject* m = PyModule_Create(&module);
    if (m == nullptr) return nullptr;
    Py_INCREF(&StoreType);
    if (PyModule_AddObject(m, "Store", reinterpret_cast<PyObject*>(&StoreType)) < 0) {
        Py_DECREF(&StoreType);
        Py_DECREF(m);
        return nullptr;
    }
    return m;
}
