// build_trie of the compiled walk (`grammars.masking._walk`, see _walk.h): the vocabulary as a
// byte trie in preorder, built once per vocabulary, with what the walk needs to take a subtree
// whole (its rows as one range of `order`, and whether its bytes are plain or UTF-8 text).
#include "_walk.h"

namespace stencil_walk {

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

}  // namespace stencil_walk
