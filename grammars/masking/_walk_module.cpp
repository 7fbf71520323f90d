// The Python module `grammars.masking._walk` (types in _walk.pyi): its method table, over the
// functions of _walk_trie.cpp, _walk_nodes.cpp, _walk_settle.cpp and _walk_masks.cpp (see _walk.h).
#include "_walk.h"

namespace {

using namespace stencil_walk;

PyMethodDef methods[] = {
    {"build_trie", build_trie, METH_VARARGS, "The byte trie of the token rows (see grammars.masking.token_walk)."},
    {"walk_nodes", walk_nodes, METH_VARARGS,
     "Walk trie subtrees through the lazy lexer DFA (see grammars.masking.token_walk)."},
    {"walk_vocabulary", walk_vocabulary, METH_VARARGS, "walk_nodes with the inside tokens as a set of token bits."},
    {"new_group_walks", new_group_walks, METH_VARARGS, "An empty per-vocabulary cache of boundary group walks."},
    {"new_settler", new_settler, METH_VARARGS,
     "A settle's fixed arguments, with an empty per-automaton memo of end_lexeme and lexer_start."},
    {"group_walks_held", group_walks_held, METH_O, "(walks, bytes) a group walk cache holds."},
    {"settle", settle, METH_VARARGS, "A new mask's (hash, bytes): a walk's bits and the boundary tokens the grammar accepts (see grammars.masking.settle)."},
    {"bits_identity", bits_identity, METH_O, "(hash, bytes) of a mask's bits (see grammars.masking.token_bits)."},
    {"bool_mask", bool_mask, METH_VARARGS, "The bool mask of a set of token bits (see grammars.masking.token_bits)."},
    {"walked_suspects", walked_suspects, METH_VARARGS,
     "The ids a bool mask allows among int32 ids that leave a walk's inside bits or count inside too, as a list."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_walk", "Compiled vocabulary walks over the lexer DFA.", -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__walk() { return PyModule_Create(&module); }
