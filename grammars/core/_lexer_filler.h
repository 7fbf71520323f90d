// The C interface through which the compiled vocabulary walk (`grammars.masking._walk`) has the
// compiled derivatives (`grammars.core._derivatives`) write lexer transitions it lacks in place, as it
// meets them. Returning to Python for each round of missing transitions cost ~3.5 us a round, and a
// key's walk (`message"` and its suffixes, a new state at every byte) takes one round per byte: ~30 us
// of a ~190 us mask that sets a schema's p99. `Store.walk_filler` makes the capsule; it writes to the
// tables and books it was made with, so it is valid only while the lexer's lock is held and no Python
// call has filled (and perhaps grown) those tables since.
#pragma once

#include <cstdint>

namespace stencil_lexer {

constexpr const char* kFillerCapsule = "grammars.core._derivatives.LexerFiller";
// What the functions return where they cannot fill (the state has no node in the store, a new state
// would pass the tables' room, a term is nested too deeply: Python's fill does it, or names the
// problem), and where a Python exception is set (from the deadline check).
constexpr int32_t kCannot = -1, kFailed = -2;

struct LexerFiller {
    void* context;
    // The successor of `state` on `byte`, written with the rest of its derivative class (and the state's
    // whole row where it loops there), as `Store.fill_entries` writes one transition: >= 0, or kCannot /
    // kFailed.
    int32_t (*fill_entry)(void* context, int32_t state, uint8_t byte);
    // The whole row of `state`, as `Store.fill` writes it: 0, or kCannot / kFailed.
    int32_t (*fill_row)(void* context, int32_t state);
};

}  // namespace stencil_lexer
