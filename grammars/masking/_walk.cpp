// The compiled vocabulary walk of `grammars.masking.token_walk.advance_rows`: the same semantics as
// the numpy reference there, one token at a time in a tight loop instead of byte position by byte
// position in numpy (whose per-call overhead dominates a first mask).
//
// The lexer DFA is lazy: a state's transition row may not exist yet. The walk parks every token that
// reaches such a state, asks Python (`fill_rows`) to compute the missing rows, takes a fresh view of
// the tables (they may have been reallocated) and resumes the parked tokens where they stopped.
// A state without a row has an all-DEAD row in `trans` (the tables are zero-filled), so `has_row`
// is read only where a transition is DEAD, off the loop's load-to-load dependency chain.
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <algorithm>
#include <cstdint>
#include <unordered_map>
#include <vector>

namespace {

constexpr int32_t kDead = 0;

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

// A token parked at a state without a row: it resumes at byte `position` from `state`.
struct Parked {
    int64_t row;
    int32_t position;
    int32_t state;
};

// Boundary rows grouped by (state before the ending byte, position of that byte).
class Boundaries {
   public:
    void add(int32_t before, int32_t position, int64_t row) {
        const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(before)) << 32) | static_cast<uint32_t>(position);
        if (last_ == groups_.size() || groups_[last_].first != key) {  // consecutive tokens often share a group
            auto found = index_.try_emplace(key, groups_.size());
            if (found.second) groups_.push_back({key, {}});
            last_ = found.first->second;
        }
        groups_[last_].second.push_back(row);
    }
    // [(before, position, rows as an int64 bytearray)] sorted by (before, position).
    PyObject* to_list() {
        std::sort(groups_.begin(), groups_.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
        PyObject* list = PyList_New(static_cast<Py_ssize_t>(groups_.size()));
        if (list == nullptr) return nullptr;
        for (size_t i = 0; i < groups_.size(); ++i) {
            const uint64_t key = groups_[i].first;
            PyObject* group = Py_BuildValue("(iiN)", static_cast<int32_t>(key >> 32), static_cast<int32_t>(key & 0xffffffffu),
                                            int64_bytes(groups_[i].second));
            if (group == nullptr) {
                Py_DECREF(list);
                return nullptr;
            }
            PyList_SET_ITEM(list, static_cast<Py_ssize_t>(i), group);
        }
        return list;
    }
    static PyObject* int64_bytes(const std::vector<int64_t>& values) {
        return PyByteArray_FromStringAndSize(reinterpret_cast<const char*>(values.data()),
                                             static_cast<Py_ssize_t>(values.size() * sizeof(int64_t)));
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

// One walk's results so far, and the tokens parked at states without a row.
struct Walk {
    const uint8_t* bytes;
    const int64_t* start_of;
    std::vector<int64_t> inside;
    Boundaries boundaries;
    std::vector<Parked> parked;

    // Walks the parked tokens to their ends, asking `fill_rows` for missing rows; the result tuple.
    PyObject* finish(PyObject* tables, PyObject* fill_rows) {
        std::vector<Parked> still;
        std::vector<int32_t> missing;
        while (!parked.empty()) {
            Tables t;
            if (!t.take(tables)) return nullptr;
            still.clear();
            missing.clear();
            for (const Parked& token : parked) {
                int32_t state = token.state;
                const int64_t begin = start_of[token.row], end = start_of[token.row + 1];
                for (int64_t at = begin + token.position;;) {
                    if (state >= t.num_states) {
                        still.push_back({token.row, static_cast<int32_t>(at - begin), state});
                        missing.push_back(state);
                        break;
                    }
                    const int32_t next = t.next_of[static_cast<int64_t>(state) * 256 + bytes[at]];
                    if (next == kDead) {
                        const auto position = static_cast<int32_t>(at - begin);
                        if (!t.known[state]) {
                            still.push_back({token.row, position, state});
                            missing.push_back(state);
                        } else if (t.accepts[state]) {
                            boundaries.add(state, position, token.row);
                        }
                        break;
                    }
                    if (++at == end) {
                        inside.push_back(token.row);
                        break;
                    }
                    state = next;
                }
            }
            t.release();
            parked.swap(still);
            if (!missing.empty() && !fill(fill_rows, missing)) return nullptr;
        }
        return Py_BuildValue("(NN)", Boundaries::int64_bytes(inside), boundaries.to_list());
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

// advance_rows(tables, fill_rows, data, starts, rows, sid, offset)
//   tables(): (trans int32[states*256], has_row bool[states], accepting bool[states]), consistent.
//   fill_rows(states: list[int]): computes the rows of `states` (may raise: the walk stops).
//   data, starts: every token's bytes, row r in data[starts[r]:starts[r+1]] (int64 starts).
//   rows: int64 rows to walk, each longer than `offset`.
// Returns (inside rows as int64 bytearray, [(before, position, rows as int64 bytearray)]) with the
// boundary groups sorted by (before, position).
PyObject* advance_rows(PyObject*, PyObject* args) {
    PyObject *tables, *fill_rows, *data_object, *starts_object, *rows_object;
    int sid, offset;
    if (!PyArg_ParseTuple(args, "OOOOOii", &tables, &fill_rows, &data_object, &starts_object, &rows_object, &sid,
                          &offset))
        return nullptr;
    View data, starts, rows;
    if (!data.get(data_object, "data", 1) || !starts.get(starts_object, "starts", 8) ||
        !rows.get(rows_object, "rows", 8))
        return nullptr;
    Walk walk{data.data<uint8_t>(), starts.data<int64_t>(), {}, {}, {}};
    const Py_ssize_t num_rows = starts.count() - 1;
    walk.parked.reserve(static_cast<size_t>(rows.count()));
    for (Py_ssize_t i = 0; i < rows.count(); ++i) {
        const int64_t row = rows.data<int64_t>()[i];
        if (row < 0 || row >= num_rows || walk.start_of[row] + offset >= walk.start_of[row + 1]) {
            PyErr_SetString(PyExc_IndexError, "advance_rows: a row out of range, or not longer than offset");
            return nullptr;
        }
        walk.parked.push_back({row, offset, sid});
    }
    return walk.finish(tables, fill_rows);
}

PyMethodDef methods[] = {
    {"advance_rows", advance_rows, METH_VARARGS,
     "Walk token rows through the lazy lexer DFA (see grammars.masking.token_walk.advance_rows)."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_walk", "Compiled vocabulary walks over the lexer DFA.", -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__walk() { return PyModule_Create(&module); }
